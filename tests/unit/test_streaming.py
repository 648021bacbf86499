"""The pods/log and pods/exec wire formats (podling.api.streaming) and how the API server picks a kubelet."""

from __future__ import annotations

import base64
import datetime
import json

import pytest

from podling.api import errors, streaming
from podling.api.streaming import ExecOptions, LogOptions
from podling.apiserver.kubelets import container_of, kubelet_address

V5, V4, V4B64, V1, V1B64 = (streaming.PROTOCOLS[name] for name in (
    streaming.V5, streaming.V4, streaming.V4_BASE64, streaming.V1, streaming.V1_BASE64))


# ---- negotiation -----------------------------------------------------------------------------


def test_the_clients_order_decides_among_served_subprotocols() -> None:
    assert streaming.negotiate(["v5.channel.k8s.io"]) is V5  # what kubectl 1.32 offers
    assert streaming.negotiate(["v9.channel.k8s.io", "v4.channel.k8s.io", "v5.channel.k8s.io"]) is V4
    assert streaming.negotiate(streaming.offered("base64.channel.k8s.io, channel.k8s.io")) is V1B64
    assert streaming.negotiate([]) is streaming.PROTOCOLS[""]  # none asked for: plain binary channels


def test_only_unknown_subprotocols_are_refused() -> None:
    with pytest.raises(errors.StatusError) as err:
        streaming.negotiate(["SPDY/3.1", "v9.channel.k8s.io"])
    assert err.value.code == 400
    assert err.value.message.startswith("requested protocol(s) are not supported: ['SPDY/3.1', 'v9.channel.k8s.io']")


def test_offered_reads_the_header() -> None:
    assert streaming.offered(" v5.channel.k8s.io ,v4.channel.k8s.io,,") == ["v5.channel.k8s.io", "v4.channel.k8s.io"]
    assert streaming.offered(None) == []


# ---- frames -----------------------------------------------------------------------------------


def test_binary_frames_lead_with_the_channel_byte() -> None:
    assert streaming.encode(V5, streaming.STDOUT, b"hi\n") == b"\x01hi\n"
    assert streaming.encode(V4, streaming.ERROR, b"") == b"\x03"
    assert streaming.decode(V5, b"\x00input") == (streaming.STDIN, b"input")
    assert streaming.decode(V1, b"\x02") == (streaming.STDERR, b"")


def test_base64_frames_lead_with_the_channel_digit() -> None:
    frame = streaming.encode(V4B64, streaming.STDERR, b"\x00\xffbinary")
    assert frame == "2" + base64.b64encode(b"\x00\xffbinary").decode()
    assert streaming.decode(V4B64, frame) == (streaming.STDERR, b"\x00\xffbinary")
    assert streaming.decode(V1B64, b"0Zm9vCg==") == (streaming.STDIN, b"foo\n")  # Kubernetes' own example


def test_v5_close_signal_half_closes_a_channel() -> None:
    assert streaming.close_signal(streaming.STDIN) == b"\xff\x00"
    assert streaming.decode(V5, streaming.close_signal(streaming.STDIN)) == (streaming.CLOSE_SIGNAL, b"\x00")
    # Before v5, 255 is just a channel nobody reads.
    assert streaming.decode(V4, b"\xff\x00") == (255, b"\x00")


@pytest.mark.parametrize(("protocol", "frame", "message"), [
    (V5, b"", "an empty frame has no channel"),
    (V5, b"\xff\x00\x01", "a CLOSE signal is [255, channel]"),
    (V4B64, "1not base64!", "channel 1: payload is not base64"),
])
def test_malformed_frames_are_protocol_errors(protocol: streaming.Protocol, frame: bytes | str, message: str) -> None:
    with pytest.raises(streaming.ProtocolError, match=message.replace("[", r"\[")):
        streaming.decode(protocol, frame)


# ---- the status on channel 3 ------------------------------------------------------------------


def test_a_non_zero_exit_is_the_status_kubectl_reads_its_exit_code_from() -> None:
    frame = streaming.status_frame(V5, streaming.exit_code_status(3, ["sh", "-c", "exit 3"]))
    assert isinstance(frame, bytes) and frame[0] == streaming.ERROR
    status = json.loads(frame[1:])
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}
    assert status["message"] == ("command terminated with non-zero exit code: error executing command "
                                 "[sh -c exit 3], exit code 3")


def test_success_is_a_status_from_v4_and_silence_before() -> None:
    frame = streaming.status_frame(V4, streaming.success_status())
    assert isinstance(frame, bytes) and json.loads(frame[1:])["status"] == "Success"
    assert streaming.status_frame(V1, streaming.success_status()) is None
    failure = errors.internal("error executing command in container: boom").status()
    assert streaming.status_frame(V1, failure) == \
        b"\x03Internal error occurred: error executing command in container: boom"
    b64 = streaming.status_frame(V4B64, failure)
    assert isinstance(b64, str) and json.loads(base64.b64decode(b64[1:]))["code"] == 500


# ---- options ----------------------------------------------------------------------------------


def test_log_options_as_kubectl_sends_them() -> None:
    options = LogOptions.parse({"container": "app", "follow": "true", "tailLines": "10", "timestamps": "true",
                                "sinceSeconds": "60", "limitBytes": "100", "previous": "false"})
    assert options == LogOptions(follow=True, timestamps=True, tail_lines=10, since_seconds=60, limit_bytes=100)
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    assert options.since(now=now) == now - datetime.timedelta(seconds=60)
    assert LogOptions.parse(dict(options.query())) == options
    assert LogOptions.parse({}).query() == [] and LogOptions.parse({}).since(now=now) is None


def test_log_since_time_is_rfc3339() -> None:
    options = LogOptions.parse({"sinceTime": "2026-01-01T10:00:00Z"})
    assert options.since_time == datetime.datetime(2026, 1, 1, 10, tzinfo=datetime.timezone.utc)
    assert options.query() == [("sinceTime", "2026-01-01T10:00:00Z")]


@pytest.mark.parametrize(("query", "message"), [
    ({"tailLines": "-1"}, "tailLines: Invalid value: -1: must be greater than or equal to 0"),
    ({"tailLines": "ten"}, "tailLines: Invalid value: 'ten': must be an integer"),
    ({"limitBytes": "0"}, "limitBytes: Invalid value: 0: must be greater than 0"),
    ({"sinceSeconds": "0"}, "sinceSeconds: Invalid value: 0: must be greater than 0"),
    ({"sinceSeconds": "5", "sinceTime": "2026-01-01T00:00:00Z"}, "at most one of `sinceTime` or `sinceSeconds`"),
    ({"sinceTime": "yesterday"}, "sinceTime: Invalid value: 'yesterday': must be an RFC 3339 time"),
    ({"follow": "maybe"}, "follow: Invalid value: 'maybe': must be true or false"),
])
def test_bad_log_options_are_400s(query: dict[str, str], message: str) -> None:
    with pytest.raises(errors.StatusError) as err:
        LogOptions.parse(query)
    assert err.value.code == 400 and message in err.value.message


def test_exec_options() -> None:
    options = ExecOptions.parse(["sh", "-c", "echo hi"], {"stdout": "true", "stderr": "true"})
    assert options == ExecOptions(command=("sh", "-c", "echo hi"), stdout=True, stderr=True)
    assert options.query() == [("command", "sh"), ("command", "-c"), ("command", "echo hi"), ("stdout", "1"),
                               ("stderr", "1")]
    # A terminal has one output stream: stderr is folded into it, as Kubernetes does.
    assert ExecOptions.parse(["sh"], {"stdin": "1", "stdout": "1", "stderr": "1", "tty": "1"}).stderr is False
    for command, query, message in [
        ([], {"stdout": "1"}, "you must specify at least one command for the container"),
        (["true"], {}, "you must specify at least 1 of stdin, stdout, stderr"),
    ]:
        with pytest.raises(errors.StatusError, match=message):
            ExecOptions.parse(command, query)


# ---- which container, which kubelet --------------------------------------------------------------


def _pod(*containers: str, init: tuple[str, ...] = (), default: str = "") -> dict[str, object]:
    metadata: dict[str, object] = {"name": "web"}
    if default:
        metadata["annotations"] = {"kubectl.kubernetes.io/default-container": default}
    return {"metadata": metadata, "spec": {"containers": [{"name": c} for c in containers],
                                           "initContainers": [{"name": c} for c in init]}}


def test_container_choice() -> None:
    assert container_of(_pod("app"), "") == "app"
    assert container_of(_pod("app", "sidecar"), "sidecar") == "sidecar"
    assert container_of(_pod("app", "sidecar", init=("setup",)), "setup") == "setup"
    assert container_of(_pod("app", "sidecar", default="sidecar"), "") == "sidecar"
    assert container_of(_pod("app", "sidecar", default="gone"), "app") == "app"


@pytest.mark.parametrize(("pod", "requested", "message"), [
    (_pod("a", "b"), "", "a container name must be specified for pod web, choose one of: [a b]"),
    (_pod("a", "b", init=("i",), default="gone"), "",
     "a container name must be specified for pod web, choose one of: [i a b]"),
    (_pod(), "", "a container name must be specified for pod web"),
    (_pod("a"), "x", "container x is not valid for pod web"),
])
def test_container_choice_refusals(pod: dict[str, object], requested: str, message: str) -> None:
    with pytest.raises(errors.StatusError) as err:
        container_of(pod, requested)
    assert (err.value.code, err.value.message) == (400, message)


def test_kubelet_address_prefers_the_internal_ip() -> None:
    node = {"metadata": {"name": "n1"}, "status": {
        "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}}}}
    assert kubelet_address(node) == ("10.0.0.5", 12345)
    assert kubelet_address({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}}) == ("n1", 10250)
    with pytest.raises(errors.StatusError, match="node n2 has no address"):
        kubelet_address({"metadata": {"name": "n2"}, "status": {}})
