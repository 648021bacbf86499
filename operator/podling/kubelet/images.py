"""podling's built-in images, built on the node from the host's static busybox.

Invariant: a built-in image never needs a registry. Each entry of :data:`BUILTIN_IMAGES` is a
recipe (a Dockerfile ``FROM scratch`` plus a few files, always with ``/bin/busybox`` copied in
from :data:`BUSYBOX`), and :func:`build` turns it into an image with the Docker SDK from an
in-memory build context, so a kubelet can make ``podling/pause:3.9`` (the sandbox) and
``podling/busybox:1.35`` (a small userland for tests and examples) whenever they are missing.
Building the same recipe twice gives the same image (Docker's build cache), so concurrent or
repeated builds are harmless.
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
from collections.abc import Mapping
from pathlib import Path

import docker

# Debian's busybox-static: a static binary, so it runs in an image with nothing else in it.
BUSYBOX = Path("/bin/busybox")

PAUSE_IMAGE = "podling/pause:3.9"
BUSYBOX_IMAGE = "podling/busybox:1.35"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Recipe:
    """A Dockerfile and the text files its build context holds besides ``busybox``."""

    dockerfile: str
    files: Mapping[str, str] = dataclasses.field(default_factory=dict)


# PID 1 of every sandbox. A trapped signal interrupts `wait`, so SIGTERM/SIGINT end it at
# once; ash's `wait` reaps with waitpid(-1), so orphans reparented to it (a pod sharing its
# process namespace) are reaped too, not only its own `sleep`.
_PAUSE_SCRIPT = """\
trap 'exit 0' TERM INT
while :; do
    /bin/busybox sleep 86400 &
    wait
done
"""

_PAUSE = Recipe(
    dockerfile="""\
FROM scratch
COPY busybox /bin/busybox
COPY pause.sh /pause.sh
ENTRYPOINT ["/bin/busybox", "sh", "/pause.sh"]
""",
    files={"pause.sh": _PAUSE_SCRIPT},
)

_BUSYBOX = Recipe(
    dockerfile="""\
FROM scratch
COPY busybox /bin/busybox
COPY passwd group /etc/
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && mkdir -p -m 1777 /tmp && mkdir -p /root /home"]
ENV PATH=/bin
CMD ["sh"]
""",
    files={
        "passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
        "group": "root:x:0:\nnogroup:x:65534:\n",
    },
)

# Image name -> recipe. Names sharing a recipe are tags of one image, built together.
BUILTIN_IMAGES: Mapping[str, Recipe] = {
    PAUSE_IMAGE: _PAUSE,
    BUSYBOX_IMAGE: _BUSYBOX,
    "podling/busybox:latest": _BUSYBOX,
}


def _context(recipe: Recipe) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        entries = {"Dockerfile": recipe.dockerfile.encode(), **{k: v.encode() for k, v in recipe.files.items()}}
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        tar.add(str(BUSYBOX), arcname="busybox")
    buffer.seek(0)
    return buffer


def build(client: docker.DockerClient, name: str, *, tag: str | None = None) -> str:
    """Build the built-in image ``name``; its id.

    Tags every name of :data:`BUILTIN_IMAGES` that shares the recipe, or only ``tag`` when
    given (a throwaway tag for tests). Blocking: callers on an event loop run it in a thread.
    Raises ``KeyError`` for a name that is not built in and ``docker.errors.BuildError``.
    """
    recipe = BUILTIN_IMAGES[name]
    tags = [tag] if tag else [n for n, r in BUILTIN_IMAGES.items() if r is recipe]
    image, _ = client.images.build(fileobj=_context(recipe), custom_context=True, tag=tags[0], rm=True, forcerm=True)
    for extra in tags[1:]:
        repository, _, version = extra.rpartition(":")
        image.tag(repository, version)
    return image.id
