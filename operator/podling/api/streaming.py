"""The wire formats of the pods/log and pods/exec subresources, shared by the API server and kubelet.

Logs are plain text; what is shared is the parsing and checking of ``PodLogOptions`` query
parameters, so the API server refuses bad options before it dials a kubelet and the kubelet
reads what the API server forwards the same way.

Exec speaks Kubernetes' WebSocket channel protocols (k8s.io/apimachinery
``util/httpstream/wsstream`` and ``util/remotecommand``). Every message carries one channel:
0 stdin, 1 stdout, 2 stderr, 3 error (the final status), 4 resize (terminal size as JSON).

* ``v5.channel.k8s.io``: binary frames; the error channel carries a JSON ``Status``; the
  client half-closes a channel with the CLOSE signal ``[255, channel]`` (stdin's EOF).
* ``v4.channel.k8s.io``: binary frames, a JSON ``Status``.
* ``v4.base64.channel.k8s.io``: text frames, payloads base64, a JSON ``Status``.
* ``channel.k8s.io``, or no subprotocol: binary frames; the error channel carries the plain
  text of a failure and nothing on success.
* ``base64.channel.k8s.io``: as above, in text frames with base64 payloads.

A binary frame is ``bytes([channel]) + payload``; a base64 frame is
``chr(ord('0') + channel) + base64(payload)``. The server writes one empty frame on the
lowest output channel it will write as soon as the socket is open, writes the status on
channel 3 when the command ends, then closes the socket normally (1000), which is what ends
the client's stdout/stderr readers. A command that exits non-zero is a ``Failure`` status
with reason ``NonZeroExitCode`` and a cause ``{reason: ExitCode, message: "N"}``: kubectl
turns that into its own exit code.

Invariant: everything here is pure (no I/O), so both ends and the unit tests share one
definition of every byte.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

from podling.api import errors

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE_SIGNAL = 255  # v5: [255, channel] half-closes ``channel``

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V1 = "channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"

NON_ZERO_EXIT_CODE = "NonZeroExitCode"
EXIT_CODE_CAUSE = "ExitCode"

Obj = dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Protocol:
    name: str  # "" when the client asked for no subprotocol
    base64: bool
    json_status: bool  # v4 and later: a Status object on the error channel, not plain text
    close_signal: bool  # v5: [255, channel] half-closes a channel


PROTOCOLS: Mapping[str, Protocol] = {
    p.name: p for p in (
        Protocol(V5, base64=False, json_status=True, close_signal=True),
        Protocol(V4, base64=False, json_status=True, close_signal=False),
        Protocol(V4_BASE64, base64=True, json_status=True, close_signal=False),
        Protocol(V1, base64=False, json_status=False, close_signal=False),
        Protocol(V1_BASE64, base64=True, json_status=False, close_signal=False),
        Protocol("", base64=False, json_status=False, close_signal=False),
    )
}


class ProtocolError(ValueError):
    """A frame that does not parse under the negotiated subprotocol."""


def offered(header: str | None) -> list[str]:
    """The subprotocols of a ``Sec-WebSocket-Protocol`` header, in the client's order."""
    return [p.strip() for p in (header or "").split(",") if p.strip()]


def negotiate(requested: Sequence[str]) -> Protocol:
    """The first subprotocol the client asked for that is served (the client's order decides).

    No subprotocol asked for is the plain binary protocol; asking only for unknown ones is a
    400, as Kubernetes answers it.
    """
    if not requested:
        return PROTOCOLS[""]
    for name in requested:
        if name and name in PROTOCOLS:
            return PROTOCOLS[name]
    served = [name for name in PROTOCOLS if name]
    raise errors.bad_request(f"requested protocol(s) are not supported: {list(requested)}; supports {served}")


def encode(protocol: Protocol, channel: int, payload: bytes) -> bytes | str:
    """One frame: bytes for a binary subprotocol, text for a base64 one."""
    if protocol.base64:
        return chr(ord("0") + channel) + base64.b64encode(payload).decode("ascii")
    return bytes((channel,)) + payload


def decode(protocol: Protocol, frame: bytes | str) -> tuple[int, bytes]:
    """(channel, payload) of one frame; a v5 CLOSE signal is ``(CLOSE_SIGNAL, bytes([channel]))``."""
    if isinstance(frame, str):
        frame = frame.encode()
    if not frame:
        raise ProtocolError("an empty frame has no channel")
    if protocol.base64:
        channel = frame[0] - ord("0")
        try:
            return channel, base64.b64decode(frame[1:], validate=True)
        except binascii.Error as err:
            raise ProtocolError(f"channel {channel}: payload is not base64: {err}") from None
    if frame[0] == CLOSE_SIGNAL and protocol.close_signal:
        if len(frame) != 2:
            raise ProtocolError(f"a CLOSE signal is [255, channel], got {len(frame)} bytes")
        return CLOSE_SIGNAL, frame[1:]
    return frame[0], frame[1:]


def close_signal(channel: int) -> bytes:
    return bytes((CLOSE_SIGNAL, channel))


# ---- the status on the error channel -------------------------------------------------------


def success_status() -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}


def exit_code_status(code: int, command: Sequence[str]) -> Obj:
    """A command that exited ``code`` != 0, as kubelet reports it (kubectl exits with ``code``)."""
    return {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command {_go_list(command)}, "
                   f"exit code {code}",
        "reason": NON_ZERO_EXIT_CODE,
        "details": {"causes": [{"reason": EXIT_CODE_CAUSE, "message": str(code)}]},
    }


def status_frame(protocol: Protocol, status: Obj) -> bytes | str | None:
    """The error-channel frame for ``status``, or None when the protocol says nothing (v1 success)."""
    if protocol.json_status:
        return encode(protocol, ERROR, json.dumps(status, separators=(",", ":")).encode())
    if status.get("status") == "Success":
        return None
    return encode(protocol, ERROR, str(status.get("message") or "").encode())


def _go_list(items: Sequence[str]) -> str:
    """A string slice as Go's %v prints it: ``[sh -c exit 3]``."""
    return "[" + " ".join(items) + "]"


# ---- options -------------------------------------------------------------------------------

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # Go's strconv.ParseBool
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False", ""})


def _bool(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "")
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise errors.bad_request(f"{name}: Invalid value: {value!r}: must be true or false")


def _optional_int(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise errors.bad_request(f"{name}: Invalid value: {raw!r}: must be an integer") from None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LogOptions:
    """``PodLogOptions`` without the container (the kubelet's URL carries that in its path)."""

    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since_seconds: int | None = None
    since_time: datetime.datetime | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> LogOptions:
        """From query parameters, checked as Kubernetes checks them; a bad one is a 400."""
        since_time = None
        if raw := query.get("sinceTime"):
            try:
                since_time = datetime.datetime.fromisoformat(raw)
            except ValueError:
                raise errors.bad_request(f"sinceTime: Invalid value: {raw!r}: must be an RFC 3339 time") from None
            if since_time.tzinfo is None:
                since_time = since_time.replace(tzinfo=datetime.timezone.utc)
        options = cls(
            follow=_bool(query, "follow"), previous=_bool(query, "previous"), timestamps=_bool(query, "timestamps"),
            tail_lines=_optional_int(query, "tailLines"), limit_bytes=_optional_int(query, "limitBytes"),
            since_seconds=_optional_int(query, "sinceSeconds"), since_time=since_time,
        )
        if options.tail_lines is not None and options.tail_lines < 0:
            raise errors.bad_request(
                f"tailLines: Invalid value: {options.tail_lines}: must be greater than or equal to 0")
        if options.limit_bytes is not None and options.limit_bytes < 1:
            raise errors.bad_request(f"limitBytes: Invalid value: {options.limit_bytes}: must be greater than 0")
        if options.since_seconds is not None and options.since_seconds < 1:
            raise errors.bad_request(f"sinceSeconds: Invalid value: {options.since_seconds}: must be greater than 0")
        if options.since_seconds is not None and options.since_time is not None:
            raise errors.bad_request("at most one of `sinceTime` or `sinceSeconds` may be specified")
        return options

    def since(self, *, now: datetime.datetime) -> datetime.datetime | None:
        """The earliest time of a line to show, if any."""
        if self.since_seconds is not None:
            return now - datetime.timedelta(seconds=self.since_seconds)
        return self.since_time

    def query(self) -> list[tuple[str, str]]:
        """The query parameters that say the same (what the API server forwards to the kubelet)."""
        params = [(name, "true") for name, on in (("follow", self.follow), ("previous", self.previous),
                                                  ("timestamps", self.timestamps)) if on]
        for name, value in (("tailLines", self.tail_lines), ("limitBytes", self.limit_bytes),
                            ("sinceSeconds", self.since_seconds)):
            if value is not None:
                params.append((name, str(value)))
        if self.since_time is not None:
            params.append(("sinceTime", self.since_time.astimezone(datetime.timezone.utc)
                           .strftime("%Y-%m-%dT%H:%M:%SZ")))
        return params


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ExecOptions:
    """``PodExecOptions`` without the container."""

    command: tuple[str, ...]
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    tty: bool = False

    @classmethod
    def parse(cls, command: Sequence[str], query: Mapping[str, str]) -> ExecOptions:
        """From the repeated ``command`` parameter and the stream flags; a bad request is a 400."""
        options = cls(command=tuple(command), stdin=_bool(query, "stdin"), stdout=_bool(query, "stdout"),
                      stderr=_bool(query, "stderr"), tty=_bool(query, "tty"))
        if not options.command:
            raise errors.bad_request("you must specify at least one command for the container")
        if not (options.stdin or options.stdout or options.stderr):
            raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
        if options.tty and options.stdout and options.stderr:
            # A terminal has one output: stderr arrives on stdout, as with Kubernetes.
            return dataclasses.replace(options, stderr=False)
        return options

    def query(self) -> list[tuple[str, str]]:
        params = [("command", part) for part in self.command]
        params += [(name, "1") for name, on in (("stdin", self.stdin), ("stdout", self.stdout),
                                                ("stderr", self.stderr), ("tty", self.tty)) if on]
        return params
