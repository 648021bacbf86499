"""Where the API server is and how to prove who we are: a kubeconfig, or command-line flags.

Invariant: a :class:`ClientConfig` is complete and checked when it exists. Every problem with
a kubeconfig or a flag (a missing file, context, cluster, user or field) is a
:class:`ConfigError` raised here, naming the file and the missing field, never a KeyError or
a TLS failure later. Relative paths inside a kubeconfig are relative to the kubeconfig's own
directory, as kubectl resolves them.

Tokens are read once, when the config is loaded: podling's tokens are static entries of the
API server's token file, not rotating projected tokens.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ssl
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML, YAMLError


class ConfigError(ValueError):
    """The kubeconfig or the flags cannot give a usable client configuration."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """The API server's URL, a bearer token, and the CA that signed the server's certificate.

    ``ca_data`` (PEM bytes) or ``ca_file``; with neither, the system's trusted CAs verify
    the server. ``namespace`` is the kubeconfig context's namespace (a default for tools;
    components name their namespaces explicitly).
    """

    server: str
    token: str = ""
    ca_data: bytes | None = None
    ca_file: Path | None = None
    namespace: str = "default"

    def __post_init__(self) -> None:
        if not self.server.startswith(("https://", "http://")):
            raise ConfigError(f"server {self.server!r} is not an http:// or https:// URL")
        if self.ca_data is not None and self.ca_file is not None:
            raise ConfigError("give the CA as ca_data or as ca_file, not both")
        self.ssl_context()  # a bad CA fails here, not on the first request

    def ssl_context(self) -> ssl.SSLContext:
        """A context that verifies the server against the configured CA (or the system's)."""
        if self.ca_data is not None:
            try:
                return ssl.create_default_context(cadata=self.ca_data.decode("ascii"))
            except (ssl.SSLError, UnicodeDecodeError) as err:
                raise ConfigError(f"the certificate authority data is not a PEM certificate: {err}") from None
        if self.ca_file is not None:
            try:
                return ssl.create_default_context(cafile=str(self.ca_file))
            except (OSError, ssl.SSLError) as err:
                raise ConfigError(f"{self.ca_file}: cannot load the certificate authority: {err}") from None
        return ssl.create_default_context()


def load_kubeconfig(path: Path | str, *, context: str | None = None) -> ClientConfig:
    """The config of ``context`` (default: the file's current-context) in the kubeconfig at ``path``."""
    path = Path(path)
    try:
        document = YAML(typ="safe").load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the kubeconfig: {err.strerror or err}") from None
    except YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: a kubeconfig must be a mapping")
    name = context or document.get("current-context")
    if not name:
        raise ConfigError(f"{path}: no context given and no current-context set")
    ctx = _named(document, path, section="contexts", field="context", name=name)
    cluster_name = _required(ctx, path, f"contexts[{name}].context.cluster")
    user_name = _required(ctx, path, f"contexts[{name}].context.user")
    cluster = _named(document, path, section="clusters", field="cluster", name=cluster_name)
    user = _named(document, path, section="users", field="user", name=user_name)
    server = _required(cluster, path, f"clusters[{cluster_name}].cluster.server")

    ca_data: bytes | None = None
    ca_file: Path | None = None
    if cluster.get("certificate-authority-data"):
        try:
            ca_data = base64.b64decode(cluster["certificate-authority-data"], validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(
                f"{path}: clusters[{cluster_name}].cluster.certificate-authority-data is not base64"
            ) from None
    elif cluster.get("certificate-authority"):
        ca_file = _relative(path, cluster["certificate-authority"])
        if not ca_file.is_file():
            raise ConfigError(
                f"{path}: clusters[{cluster_name}].cluster.certificate-authority: no such file {ca_file}"
            )

    if user.get("token"):
        token = str(user["token"])
    elif user.get("tokenFile"):
        token = _read_token(_relative(path, user["tokenFile"]), what=f"{path}: users[{user_name}].user.tokenFile")
    else:
        raise ConfigError(f"{path}: users[{user_name}].user has neither token nor tokenFile")
    return ClientConfig(server=server, token=token, ca_data=ca_data, ca_file=ca_file,
                        namespace=ctx.get("namespace") or "default")


def from_flags(*, server: str, token_file: Path | str | None = None, ca_file: Path | str | None = None) -> ClientConfig:
    """The config of a component started with ``--server URL --token-file F --ca-file F``."""
    if not server:
        raise ConfigError("--server is required (the API server's URL, such as https://127.0.0.1:6443)")
    token = _read_token(Path(token_file), what="--token-file") if token_file else ""
    ca = Path(ca_file) if ca_file else None
    if ca is not None and not ca.is_file():
        raise ConfigError(f"--ca-file: no such file {ca}")
    return ClientConfig(server=server, token=token, ca_file=ca)


def _named(document: dict[str, Any], path: Path, *, section: str, field: str, name: str) -> dict[str, Any]:
    """``document[section][i][field]`` for the entry whose ``name`` is ``name``."""
    for entry in document.get(section) or ():
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(field)
            if not isinstance(body, dict):
                raise ConfigError(f"{path}: {section}[{name}] has no {field}")
            return body
    raise ConfigError(f"{path}: no entry named {name!r} in {section}")


def _required(mapping: dict[str, Any], path: Path, field: str) -> str:
    value = mapping.get(field.rsplit(".", 1)[-1])
    if not value or not isinstance(value, str):
        raise ConfigError(f"{path}: {field} is missing")
    return value


def _relative(kubeconfig: Path, value: str) -> Path:
    target = Path(value).expanduser()
    return target if target.is_absolute() else kubeconfig.parent / target


def _read_token(path: Path, *, what: str) -> str:
    try:
        token = path.read_text().strip()
    except OSError as err:
        raise ConfigError(f"{what}: cannot read {path}: {err.strerror or err}") from None
    if not token:
        raise ConfigError(f"{what}: {path} is empty")
    return token
