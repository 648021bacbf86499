"""The admin credentials ``podling up`` hands to kubectl: a token file entry and a kubeconfig.

The token file is created once (mode 0600) and kept across restarts, so a kubeconfig written
earlier keeps working; the kubeconfig is rewritten on every start with the server's URL.
"""

from __future__ import annotations

import base64
import csv
from pathlib import Path

from ruamel.yaml import YAML

from podling.apiserver.auth import write_token_file

ADMIN = "admin"


def ensure_admin_token(path: Path) -> str | None:
    """The admin's token from ``path``, creating the file with a new one if it is missing.

    None when the file exists but names no admin (a user-supplied file): no kubeconfig then.
    """
    if not path.exists():
        return write_token_file(path, user=ADMIN, groups=("system:masters",))
    with path.open(newline="") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and row[1] == ADMIN:
                return row[0]
    return None


def write(path: Path, *, server: str, token: str, ca: Path) -> Path:
    cluster = {"server": server, "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode()}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "podling", "cluster": cluster}],
        "users": [{"name": ADMIN, "user": {"token": token}}],
        "contexts": [{"name": "podling", "context": {"cluster": "podling", "user": ADMIN, "namespace": "default"}}],
        "current-context": "podling",
    }
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        YAML().dump(config, f)
    tmp.chmod(0o600)
    tmp.replace(path)
    return path
