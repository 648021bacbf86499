"""A container's environment, as the kubelet computes it before creating the container.

Invariant: the result is a pure function of the pod, the container, the node's facts and the
ConfigMaps and Secrets it names as the API serves them at call time; each ConfigMap or Secret
is read at most once per call, so one container never sees two versions of one object. The
rules are Kubernetes' own (pkg/kubelet/kubelet_pods.go, makeEnvironmentVariables):

* ``envFrom`` sources come first, in order, each key behind its ``prefix``; ``env`` entries
  then add or override, in order.
* A ``value`` may refer to variables defined before it as ``$(NAME)``; ``$$`` is a literal
  ``$`` (so ``$$(NAME)`` is the text ``$(NAME)``) and a reference to an undefined variable
  stays as written (third_party/forked/golang/expansion). :func:`expand` is the same rule
  the kubelet applies to ``command`` and ``args``.
* ``valueFrom`` reads a ConfigMap or Secret key, a field of the pod or a resource of a
  container. A missing object or key is an :class:`EnvError` (the container waits with
  reason CreateContainerConfigError), unless the reference is ``optional``: then the variable
  (or the whole ``envFrom`` source) is left out.

The downward-API readers (:func:`object_field`, :func:`resource_field`) are shared with the
downwardAPI volume; they raise ValueError, which each caller words for its own status.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from podling.api import meta
from podling.api.quantity import QuantityLike, bytes_, cpu_millis, parse_quantity
from podling.api.resources import find
from podling.client.http import ApiClient, ApiError, TransportError, is_not_found

Obj = Mapping[str, Any]
SourceKind = Literal["configmap", "secret"]

_CONFIGMAPS = find(group="", version="v1", plural="configmaps")
_SECRETS = find(group="", version="v1", plural="secrets")
assert _CONFIGMAPS is not None and _SECRETS is not None


class EnvError(Exception):
    """The environment cannot be built; the message is Kubernetes' CreateContainerConfigError text."""


# ---- $(VAR) expansion --------------------------------------------------------------------


def _scan(text: str) -> Iterator[tuple[str, bool]]:
    """``text`` in pieces: (literal text, False) and (variable name, True) for each ``$(NAME)``."""
    checkpoint = cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            yield text[checkpoint:cursor], False
            following = text[cursor + 1]
            if following == "$":
                yield "$", False
                cursor += 1
            elif following == "(" and (close := text.find(")", cursor + 2)) >= 0:
                yield text[cursor + 2:close], True
                cursor = close
            else:  # "$(" never closed, or "$x": the "$" and the next character, as written
                yield "$" + following, False
                cursor += 1
            checkpoint = cursor + 1
        cursor += 1
    yield text[checkpoint:], False


def expand(text: str, env: Mapping[str, str]) -> str:
    """``text`` with each ``$(NAME)`` defined in ``env`` replaced, as Kubernetes expands them.

    ``$$`` is an escaped ``$``; ``$(NAME)`` of an undefined NAME, a ``$(`` never closed and a
    ``$`` before anything else stay as they are.
    """
    return "".join(env.get(piece, f"$({piece})") if is_name else piece for piece, is_name in _scan(text))


def references(text: str) -> set[str]:
    """The variable names ``text`` refers to as ``$(NAME)`` (escaped ``$$(NAME)`` is not one)."""
    return {piece for piece, is_name in _scan(text) if is_name}


# ---- the downward API --------------------------------------------------------------------


def _go_quote(text: str) -> str:
    """``text`` as Go's ``%q`` prints it (strconv.Quote), which the downward API uses for maps."""
    escapes = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
               "\t": "\\t", "\v": "\\v"}
    out = []
    for char in text:
        if char in escapes:
            out.append(escapes[char])
        elif char < " " or char == "\x7f":
            out.append(f"\\x{ord(char):02x}")
        elif not char.isprintable():
            out.append(f"\\u{ord(char):04x}" if ord(char) < 0x10000 else f"\\U{ord(char):08x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def format_map(values: Mapping[str, str]) -> str:
    """Labels or annotations as the downward API writes them: ``key="value"`` lines, sorted."""
    return "\n".join(f"{key}={_go_quote(values[key])}" for key in sorted(values))


def _split_subscript(field_path: str) -> tuple[str, str] | None:
    """``("metadata.labels", "app")`` for ``metadata.labels['app']``; None without a subscript."""
    if not field_path.endswith("']"):
        return None
    path, sep, key = field_path[:-2].partition("['")
    return (path, key) if sep and path else None


def object_field(pod: Obj, field_path: str) -> str:
    """A metadata field of the pod, as the downward API gives it (fieldpath.ExtractFieldPathAsString)."""
    if (subscripted := _split_subscript(field_path)) is not None:
        path, key = subscripted
        if path == "metadata.labels":
            return meta.labels(pod).get(key, "")
        if path == "metadata.annotations":
            return meta.annotations(pod).get(key, "")
        raise ValueError(f"fieldPath {field_path!r} does not support subscript")
    match field_path:
        case "metadata.name":
            return meta.name(pod)
        case "metadata.namespace":
            return meta.namespace(pod)
        case "metadata.uid":
            return str((pod.get("metadata") or {}).get("uid") or "")
        case "metadata.labels":
            return format_map(meta.labels(pod))
        case "metadata.annotations":
            return format_map(meta.annotations(pod))
    raise ValueError(f"unsupported fieldPath: {field_path}")


def pod_containers(pod: Obj) -> list[Obj]:
    spec = pod.get("spec") or {}
    return [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]


def resource_field(*, pod: Obj, container: Obj | None, selector: Obj,
                   allocatable: Mapping[str, QuantityLike]) -> str:
    """A container's resource limit or request in units of the selector's divisor, rounded up.

    ``container`` is the one ``selector.containerName`` defaults to (env), or None where the
    name is required (volumes). An unset limit is the node's allocatable amount, as the
    kubelet defaults it; an unset request is the limit, as the API server defaults it.
    """
    if name := selector.get("containerName"):
        container = next((c for c in pod_containers(pod) if c.get("name") == name), None)
        if container is None:
            raise ValueError(f"container {name} not found")
    if container is None:
        raise ValueError("resourceFieldRef needs a containerName")
    resource = str(selector.get("resource") or "")
    kind, _, what = resource.partition(".")
    if kind not in ("limits", "requests") or what not in ("cpu", "memory", "ephemeral-storage"):
        raise ValueError(f"unsupported container resource : {resource}")
    resources = container.get("resources") or {}
    limit = (resources.get("limits") or {}).get(what)
    if kind == "limits":
        amount = allocatable.get(what, 0) if limit is None else limit
    else:
        amount = (resources.get("requests") or {}).get(what, 0 if limit is None else limit)
    divisor = selector.get("divisor") or "1"
    if not parse_quantity(divisor).value:
        divisor = "1"
    if what == "cpu":
        numerator, denominator = cpu_millis(amount), cpu_millis(divisor)
    else:
        numerator, denominator = bytes_(amount), bytes_(divisor)
    return str(-(-numerator // denominator))


def _pod_field(pod: Obj, field_path: str, *, pod_ip: str, host_ip: str, node_name: str) -> str:
    """A fieldRef of an env var: the metadata fields plus what only the kubelet knows."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    match field_path:
        case "spec.nodeName":
            return spec.get("nodeName") or node_name
        case "spec.serviceAccountName":
            return spec.get("serviceAccountName") or ""
        case "status.hostIP" | "status.hostIPs":
            return host_ip or status.get("hostIP") or ""
        case "status.podIP":
            return pod_ip or status.get("podIP") or ""
        case "status.podIPs":
            if pod_ip:
                return pod_ip
            return ",".join(entry.get("ip", "") for entry in status.get("podIPs") or ()) or status.get("podIP", "")
    return object_field(pod, field_path)


# ---- ConfigMaps and Secrets --------------------------------------------------------------


class PodObjects:
    """The ConfigMaps and Secrets of one pod's namespace, each read through the API at most once.

    ``get`` gives the object's data as bytes per key (Secrets decoded; a ConfigMap's
    ``binaryData`` beside its ``data``), or None when it does not exist; other failures are
    ValueError with a message fit for a status.
    """

    def __init__(self, *, api: ApiClient, namespace: str) -> None:
        self._api = api
        self._namespace = namespace
        self._seen: dict[tuple[SourceKind, str], dict[str, bytes] | None] = {}

    async def get(self, kind: SourceKind, name: str) -> dict[str, bytes] | None:
        if (kind, name) not in self._seen:
            self._seen[kind, name] = await self._read(kind, name)
        return self._seen[kind, name]

    async def _read(self, kind: SourceKind, name: str) -> dict[str, bytes] | None:
        resource = _CONFIGMAPS if kind == "configmap" else _SECRETS
        try:
            obj = await self._api.get(resource, namespace=self._namespace, name=name)
        except ApiError as err:
            if is_not_found(err):
                return None
            raise ValueError(f"couldn't get {kind} {self._namespace}/{name}: {err.message or err}") from err
        except TransportError as err:
            raise ValueError(f"couldn't get {kind} {self._namespace}/{name}: {err}") from err
        try:
            if kind == "secret":
                return {key: base64.b64decode(value) for key, value in (obj.get("data") or {}).items()}
            data = {key: value.encode() for key, value in (obj.get("data") or {}).items()}
            binary = {key: base64.b64decode(value) for key, value in (obj.get("binaryData") or {}).items()}
        except ValueError as err:  # binascii.Error: the server stored something that is not base64
            raise ValueError(f"{kind} {self._namespace}/{name} holds data that is not base64: {err}") from err
        return data | binary

    def not_found(self, kind: SourceKind, name: str) -> str:
        return f'{kind} "{name}" not found'

    def missing_key(self, kind: SourceKind, name: str, key: str) -> str:
        title = "ConfigMap" if kind == "configmap" else "Secret"
        return f"couldn't find key {key} in {title} {self._namespace}/{name}"


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


# ---- the environment ---------------------------------------------------------------------


async def container_env(
    *,
    api: ApiClient,
    pod: Obj,
    container: Obj,
    pod_ip: str = "",
    node_name: str = "",
    host_ip: str = "",
    allocatable: Mapping[str, QuantityLike] | None = None,
) -> dict[str, str]:
    """The container's environment, in the order its variables were first defined.

    ``allocatable`` is the node's (``cpu``, ``memory``, ``ephemeral-storage``): what a
    resourceFieldRef to an unset limit reads; without it, such a limit reads as 0.
    """
    objects = PodObjects(api=api, namespace=meta.namespace(pod))
    env: dict[str, str] = {}
    try:
        for source in container.get("envFrom") or ():
            env.update(await _env_from(objects, source))
        for var in container.get("env") or ():
            value = await _value(objects, var, pod=pod, container=container, env=env, pod_ip=pod_ip,
                                 host_ip=host_ip, node_name=node_name, allocatable=allocatable or {})
            if value is not None:
                env[var["name"]] = value
    except ValueError as err:
        raise EnvError(str(err)) from err
    return env


async def _env_from(objects: PodObjects, source: Obj) -> dict[str, str]:
    ref, kind = ((source["configMapRef"], "configmap") if source.get("configMapRef")
                 else (source.get("secretRef") or {}, "secret"))
    name = ref.get("name") or ""
    data = await objects.get(kind, name)
    if data is None:
        if ref.get("optional"):
            return {}
        raise ValueError(objects.not_found(kind, name))
    prefix = source.get("prefix") or ""
    return {prefix + key: _text(value) for key, value in data.items()}


async def _value(objects: PodObjects, var: Obj, *, pod: Obj, container: Obj, env: Mapping[str, str],
                 pod_ip: str, host_ip: str, node_name: str, allocatable: Mapping[str, QuantityLike]) -> str | None:
    """The variable's value, or None when an optional source leaves it out."""
    if value := var.get("value"):
        return expand(value, env)
    source = var.get("valueFrom")
    if not source:
        return ""
    if field := source.get("fieldRef"):
        return _pod_field(pod, field.get("fieldPath") or "", pod_ip=pod_ip, host_ip=host_ip, node_name=node_name)
    if selector := source.get("resourceFieldRef"):
        return resource_field(pod=pod, container=container, selector=selector, allocatable=allocatable)
    for field_name, kind in (("configMapKeyRef", "configmap"), ("secretKeyRef", "secret")):
        if ref := source.get(field_name):
            return await _key_ref(objects, kind, ref)
    raise ValueError(f"env var {var.get('name')!r}: valueFrom names no source podling knows")


async def _key_ref(objects: PodObjects, kind: SourceKind, ref: Obj) -> str | None:
    name, key, optional = ref.get("name") or "", ref.get("key") or "", bool(ref.get("optional"))
    data = await objects.get(kind, name)
    if data is None:
        if optional:
            return None
        raise ValueError(objects.not_found(kind, name))
    if key not in data:
        if optional:
            return None
        raise ValueError(objects.missing_key(kind, name, key))
    return _text(data[key])

