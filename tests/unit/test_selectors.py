"""Label and field selectors: parsing, canonical text, matching and Kubernetes' edge cases."""

from __future__ import annotations

import pytest

from podling.api.selectors import (
    ParseError,
    field_getters,
    format_label_selector,
    from_label_selector,
    from_map,
    parse_field_selector,
    parse_label_selector,
)

WEB = {"app": "web", "tier": "front", "replicas": "3"}


@pytest.mark.parametrize(
    ("text", "canonical", "matches_web"),
    [
        ("", "", True),
        ("app=web", "app=web", True),
        ("app==web", "app=web", True),
        ("app!=web", "app!=web", False),
        ("app!=db", "app!=db", True),
        ("missing!=x", "missing!=x", True),  # != matches objects without the key
        ("tier in (front, back)", "tier in (back,front)", True),
        ("tier in (back)", "tier in (back)", False),
        ("tier notin (back)", "tier notin (back)", True),
        ("missing notin (x)", "missing notin (x)", True),
        ("missing in (x)", "missing in (x)", False),
        ("app", "app", True),
        ("!app", "!app", False),
        ("!missing", "!missing", True),
        ("tier=front,app=web", "app=web,tier=front", True),
        ("  app = web ,  !canary ", "app=web,!canary", True),
        ("app=", "app=", False),
        ("replicas>2", "replicas>2", True),
        ("replicas<3", "replicas<3", False),
        ("app>2", "app>2", False),  # not an integer: no match
        ("example.com/role in (a,b)", "example.com/role in (a,b)", False),
    ],
)
def test_label_selector(text: str, canonical: str, matches_web: bool) -> None:
    selector = parse_label_selector(text)
    assert str(selector) == canonical
    assert selector.matches(WEB) is matches_web
    assert parse_label_selector(canonical) == selector


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("app in (web", "expected ',' or ')' at position 11, found end of input"),
        ("app in web", "expected '(' at position 7, found 'web'"),
        ("app web", "after 'app' at position 4, found 'web'"),
        ("app=web,", "expected a requirement after ',' at position 8"),
        ("!app=web", "expected ',' or end of input after '!app' at position 4, found '='"),
        ("app=web db", "expected ',' or end of input at position 8, found 'db'"),
        ("=web", "expected a label key at position 0, found '='"),
        ("app=we$b", "invalid label value 'we$b'"),
        ("Bad.Prefix/app=x", "invalid label key 'Bad.Prefix/app'"),
        ("-app=x", "invalid label key '-app'"),
        ("a>b", "the '>' operator needs an integer, got 'b'"),
    ],
)
def test_label_selector_errors_name_the_text(text: str, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_label_selector(text)
    assert repr(text) in str(caught.value)
    assert message in str(caught.value)


def test_label_selector_objects() -> None:
    selector = from_label_selector({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "back"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "replicas", "operator": "Exists"},
            {"key": "zone", "operator": "NotIn", "values": ["x"]},
        ],
    })
    assert str(selector) == "app=web,!canary,replicas,tier in (back,front),zone notin (x)"
    assert selector.matches(WEB)
    assert not selector.matches({**WEB, "canary": "1"})


def test_empty_and_null_selectors() -> None:
    assert from_label_selector({}).matches({}) and from_label_selector({}).empty
    assert from_label_selector({"matchLabels": {}, "matchExpressions": []}).matches(WEB)
    assert not from_label_selector(None).matches(WEB)  # null LabelSelector: nothing
    assert not from_label_selector(None).matches({})
    assert not from_label_selector(None).empty
    assert parse_label_selector("").matches(None)


def test_selector_from_a_plain_map() -> None:
    assert from_map({"app": "web"}).matches(WEB)
    assert not from_map({"app": "web", "tier": "back"}).matches(WEB)
    assert from_map({}).matches(WEB)  # callers skip a Service without a selector themselves


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]},
         "matchExpressions[0]: 'Equals' is not a valid label selector operator"),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}, "needs at least one value"),
        ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}, "takes no values"),
        ({"matchLabels": {"a": "not ok"}}, "invalid label value 'not ok'"),
        ({"matchLabels": {"a": 1}}, "invalid label value 1: not a string"),
        ({"matchExpressions": [{"operator": "Exists"}]}, "invalid label key ''"),
    ],
)
def test_label_selector_object_errors(selector: dict, message: str) -> None:
    with pytest.raises(ParseError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_label_selector(selector)


def test_format_label_selector() -> None:
    assert format_label_selector({"matchLabels": {"b": "2", "a": "1"}}) == "a=1,b=2"
    assert format_label_selector({}) == ""
    assert format_label_selector({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}) == "<error>"


POD = {
    "metadata": {"name": "web-1", "namespace": "prod"},
    "spec": {"nodeName": "node-a", "restartPolicy": "Always"},
    "status": {"phase": "Running"},
}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("", True),
        ("metadata.name=web-1", True),
        ("metadata.name==web-1,metadata.namespace=prod", True),
        ("spec.nodeName!=node-a", False),
        ("spec.nodeName=", False),
        ("status.phase!=Succeeded,status.phase!=Failed", True),
        ("spec.hostNetwork=false", True),  # an absent bool reads as false
        (" spec.nodeName = node-a ", True),
        ("metadata.name=web-1,,", True),
    ],
)
def test_field_selector_on_pods(text: str, matches: bool) -> None:
    assert parse_field_selector(text, kind="Pod").matches(POD) is matches


def test_field_selector_kinds_and_escapes() -> None:
    event = {"involvedObject": {"kind": "Pod", "name": "web-1", "uid": "u1"}, "source": {"component": "kubelet"},
             "type": "Warning", "reason": "BackOff"}
    assert parse_field_selector("involvedObject.name=web-1,involvedObject.kind=Pod,source=kubelet,type=Warning",
                                kind="Event").matches(event)
    assert parse_field_selector("spec.unschedulable!=true", kind="Node").matches({"spec": {}})
    assert parse_field_selector("spec.unschedulable=true", kind="Node").matches({"spec": {"unschedulable": True}})
    assert parse_field_selector("type=kubernetes.io/tls", kind="Secret").matches({"type": "kubernetes.io/tls"})
    selector = parse_field_selector(r"metadata.name=a\,b\=c\\d", kind="ConfigMap")
    assert selector.requirements[0].value == "a,b=c\\d"
    assert str(selector) == r"metadata.name=a\,b\=c\\d"
    custom = parse_field_selector("spec.color=red", getters={"spec.color": lambda obj: obj["spec"]["color"]})
    assert custom.matches({"spec": {"color": "red"}})
    assert "status.phase" in field_getters("Namespace") and "metadata.name" in field_getters("Anything")


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("spec.nodeName=a", "Service", "field label not supported: spec.nodeName"),
        ("status.podIP=1", "Node", "field label not supported: status.podIP"),
        ("metadata.name", "Pod", "'metadata.name' has no operator"),
        (r"metadata.name=a\b", "Pod", "invalid escape sequence '\\b'"),
        ("metadata.name=a=b", "Pod", "unescaped '=' in value 'a=b'"),
    ],
)
def test_field_selector_errors(text: str, kind: str, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_field_selector(text, kind=kind)
    assert message in str(caught.value)
