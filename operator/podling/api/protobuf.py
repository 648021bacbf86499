"""Kubernetes protobuf request bodies, read into the JSON objects they stand for.

Invariant: ``decode(body)`` returns exactly the object the sending Go client would have written
as JSON (what ``kubectl ... --dry-run=client -o json`` prints for the same command), or raises
:class:`ProtobufError` saying where and why; it never returns part of an object, and it never
drops a field it cannot read unless the field holds only its zero value.

Wire format (k8s.io/apimachinery's protobuf serializer): the four bytes ``k8s\\0``, then a
``runtime.Unknown`` message: typeMeta = 1 (apiVersion = 1, kind = 2), raw = 2 (the typed
object, which itself carries no apiVersion or kind), contentEncoding = 3, contentType = 4.

What each field means comes from ``schemas/_protobuf.json`` (written by
``tools/import_protobuf.py``): per message full name, field number → JSON name (Kubernetes'
proto names already are the JSON names), type (a scalar kind, another message of the file, or
one of the four types below), whether it repeats or is a map (entry key = 1, value = 2), and
whether a zero value means "absent". That last bit is needed because Go's protobuf code writes
every non-pointer field, zero or not, while its JSON encoder leaves out zero ``omitempty``
fields: ``ObjectMeta.generateName`` arrives as ``""`` but is no JSON field, while a pointer
(``spec.replicas: 0``) or required field (``ports[].port``) keeps its zero. The rest maps as
Kubernetes' JSON does: a present message is an object even if empty (``"status": {}``), a Go
struct embedded inline (``Volume.volumeSource``) gives its fields to its parent, repeated →
list (packed or not), ``bytes`` → base64, and

* ``meta.v1.Time`` {seconds = 1, nanos = 2} → RFC 3339 to the second, ``null`` if empty;
* ``meta.v1.MicroTime`` → RFC 3339 with six fraction digits, ``null`` if empty;
* ``resource.Quantity`` {string = 1} → the string;
* ``intstr.IntOrString`` {type = 1, intVal = 2, strVal = 3} → the int or the string.

(RawExtension, Duration and FieldsV1 need rules too, but no message of the table has them: no
kind podling reads uses the first two, and the table's source predates
``ManagedFieldsEntry.fieldsV1``.)

A field the table does not know (newer than the table's source) is skipped if it holds only a
zero value, as Go's JSON would most likely skip it too; otherwise the body is refused rather
than silently shortened.

Why no protobuf library: Kubernetes' messages are plain proto2 (no oneofs, enums, extensions or
zigzag), the whole reader below is ~40 lines, and the table is data; a runtime would add a
dependency plus a descriptor pool to build at import, to do the same walk more slowly.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import functools
import importlib.resources
import json
from collections.abc import Callable, Iterator
from typing import Any

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_WIRE_NAMES = {_VARINT: "varint", _FIXED64: "fixed64", _BYTES: "length-delimited", _FIXED32: "fixed32"}
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

Raw = int | bytes  # a field's undecoded value: an int for varint and fixed types, else bytes
Convert = Callable[[Any, str], Any]  # (raw value, path for errors) -> JSON value


class ProtobufError(ValueError):
    """The body is not a Kubernetes protobuf object podling can read; the message says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """The ``runtime.Unknown`` around an object: its apiVersion, kind and undecoded bytes."""

    api_version: str
    kind: str
    raw: bytes


# --- the wire -------------------------------------------------------------------------------

def _varint(data: bytes, pos: int, path: str) -> tuple[int, int]:
    result = shift = 0
    while shift < 70:
        if pos >= len(data):
            raise ProtobufError(f"{path}: truncated (the data ends inside a varint)")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise ProtobufError(f"{path}: a varint runs past 10 bytes")


def read_fields(data: bytes, *, path: str) -> Iterator[tuple[int, int, Raw]]:
    """Each field of one message, in wire order: (number, wire type, raw value)."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos, path)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError(f"{path}: field number 0 is not valid protobuf (garbage input?)")
        if wire == _VARINT:
            value, pos = _varint(data, pos, path)
        elif wire == _BYTES:
            size, pos = _varint(data, pos, path)
            if pos + size > end:
                raise ProtobufError(f"{path}: truncated (field {number} declares {size} bytes, {end - pos} left)")
            value, pos = data[pos:pos + size], pos + size
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if pos + size > end:
                raise ProtobufError(f"{path}: truncated (field {number} needs {size} bytes, {end - pos} left)")
            value, pos = int.from_bytes(data[pos:pos + size], "little"), pos + size
        else:
            raise ProtobufError(f"{path}: field {number} has wire type {wire}, which Kubernetes never writes")
        yield number, wire, value


def _skip_unknown(number: int, wire: int, value: Raw, path: str, message: str) -> None:
    if value not in (0, b""):
        raise ProtobufError(f"{path}: field {number} ({_WIRE_NAMES[wire]}) is not in podling's protobuf table "
                            f"for {message} (a field newer than the table?); send this object as JSON")


def _fields(data: bytes, path: str, message: str, wires: dict[int, int]) -> dict[int, Raw]:
    """The last value of each field of a small fixed message (numbers → expected wire types)."""
    found: dict[int, Raw] = {}
    for number, wire, value in read_fields(data, path=path):
        if number not in wires:
            _skip_unknown(number, wire, value, path, message)
        elif wire != wires[number]:
            raise ProtobufError(f"{path}: field {number} is {_WIRE_NAMES[wire]}, "
                                f"expected {_WIRE_NAMES[wires[number]]}")
        else:
            found[number] = value
    return found


# --- scalars and the four special messages ----------------------------------------------------

def _string(value: bytes, path: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtobufError(f"{path}: a string field is not valid UTF-8") from None


def _signed(value: int, path: str) -> int:
    return value - (1 << 64) if value >> 63 else value


_SCALARS: dict[str, tuple[int, Convert]] = {
    "string": (_BYTES, _string),
    "bytes": (_BYTES, lambda value, path: base64.b64encode(value).decode("ascii")),
    "bool": (_VARINT, lambda value, path: bool(value)),
    "int32": (_VARINT, _signed),
    "int64": (_VARINT, _signed),
}


def _time(data: bytes, path: str) -> str | None:
    if not data:
        return None
    seconds = _signed(_fields(data, path, "Time", {1: _VARINT, 2: _VARINT}).get(1, 0), path)
    return (_EPOCH + datetime.timedelta(seconds=seconds)).isoformat(timespec="seconds").replace("+00:00", "Z")


def _micro_time(data: bytes, path: str) -> str | None:
    if not data:
        return None
    found = _fields(data, path, "MicroTime", {1: _VARINT, 2: _VARINT})
    moment = _EPOCH + datetime.timedelta(seconds=_signed(found.get(1, 0), path),
                                         microseconds=_signed(found.get(2, 0), path) // 1000)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _quantity(data: bytes, path: str) -> str:
    return _string(_fields(data, path, "Quantity", {1: _BYTES}).get(1, b""), path) or "0"


def _int_or_string(data: bytes, path: str) -> int | str:
    found = _fields(data, path, "IntOrString", {1: _VARINT, 2: _VARINT, 3: _BYTES})
    kind = found.get(1, 0)
    if kind == 0:
        return _signed(found.get(2, 0), path)
    if kind == 1:
        return _string(found.get(3, b""), path)
    raise ProtobufError(f"{path}: IntOrString type {kind} is neither 0 (int) nor 1 (string)")


# Messages read by code rather than by the table (their JSON form is not an object).
SPECIAL_TYPES: dict[str, Convert] = {
    f"{META}Time": _time,
    f"{META}MicroTime": _micro_time,
    "k8s.io.apimachinery.pkg.api.resource.Quantity": _quantity,
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": _int_or_string,
}


# --- the table --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    name: str
    wire: int  # the wire type of one value (a map's: of one entry)
    convert: Convert  # a map's returns (key, value)
    shape: str  # "one", "list", "map" or "inline" (an embedded Go struct: its fields are the parent's)
    omitempty: bool  # a zero "one" value means no JSON field


def _converter(type_name: str, messages: dict[str, Any]) -> tuple[int, Convert]:
    if type_name in _SCALARS:
        return _SCALARS[type_name]
    if type_name in SPECIAL_TYPES:
        return _BYTES, SPECIAL_TYPES[type_name]
    if type_name in messages:
        return _BYTES, functools.partial(_message, name=type_name)
    raise KeyError(f"_protobuf.json names an unknown type {type_name!r}")


def _map_entry(key_type: str, value_type: str, messages: dict[str, Any]) -> Convert:
    key_wire, key = _converter(key_type, messages)
    value_wire, value = _converter(value_type, messages)

    def convert(data: bytes, path: str) -> tuple[Any, Any]:
        found = _fields(data, path, "a map entry", {1: key_wire, 2: value_wire})
        name = key(found.get(1, b"" if key_wire == _BYTES else 0), path)
        return name, value(found.get(2, b"" if value_wire == _BYTES else 0), f"{path}[{name!r}]")

    return convert


@functools.cache
def _table() -> dict[str, dict[int, _Field]]:
    resource = importlib.resources.files("podling") / "schemas" / "_protobuf.json"
    messages: dict[str, dict[str, dict[str, Any]]] = json.loads(resource.read_text(encoding="utf-8"))
    table: dict[str, dict[int, _Field]] = {}
    for name, fields in messages.items():
        table[name] = {}
        for number, spec in fields.items():
            if "map" in spec:
                wire, convert, shape = _BYTES, _map_entry(*spec["map"], messages), "map"
            else:
                wire, convert = _converter(spec["type"], messages)
                shape = "list" if spec.get("repeated") else "inline" if spec.get("inline") else "one"
            table[name][int(number)] = _Field(spec["name"], wire, convert, shape, spec.get("omitempty", False))
    return table


def _packed(data: bytes, path: str) -> Iterator[int]:
    pos = 0
    while pos < len(data):
        value, pos = _varint(data, pos, path)
        yield value


def _message(data: bytes, path: str, *, name: str) -> dict[str, Any]:
    fields = _table()[name]
    out: dict[str, Any] = {}
    for number, wire, value in read_fields(data, path=path):
        field = fields.get(number)
        if field is None:
            _skip_unknown(number, wire, value, path, name)
            continue
        where = f"{path}.{field.name}"
        if field.shape == "list" and field.wire == _VARINT and wire == _BYTES:  # a packed list
            out.setdefault(field.name, []).extend(field.convert(item, where) for item in _packed(value, where))
            continue
        if wire != field.wire:
            raise ProtobufError(f"{where}: field {number} is {_WIRE_NAMES[wire]}, expected {_WIRE_NAMES[field.wire]}")
        if field.shape == "one":
            if value or not field.omitempty:
                out[field.name] = field.convert(value, where)
        elif field.shape == "list":
            items = out.setdefault(field.name, [])
            items.append(field.convert(value, f"{where}[{len(items)}]"))
        elif field.shape == "map":
            key, item = field.convert(value, where)
            out.setdefault(field.name, {})[key] = item
        else:
            out.update(field.convert(value, path))
    return out


# --- the envelope -----------------------------------------------------------------------------

def unwrap(body: bytes) -> Envelope:
    """The ``runtime.Unknown`` envelope of a protobuf body, its object still undecoded."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf body: it does not start with the bytes 'k8s\\x00'")
    found = _fields(body[len(MAGIC):], "runtime.Unknown", "runtime.Unknown",
                    {1: _BYTES, 2: _BYTES, 3: _BYTES, 4: _BYTES})
    type_meta = _fields(found.get(1, b""), "runtime.Unknown.typeMeta", "runtime.TypeMeta", {1: _BYTES, 2: _BYTES})
    api_version = _string(type_meta.get(1, b""), "typeMeta.apiVersion")
    kind = _string(type_meta.get(2, b""), "typeMeta.kind")
    if not api_version or not kind:
        raise ProtobufError("the protobuf body names no apiVersion and kind (runtime.Unknown.typeMeta)")
    encoding = _string(found.get(3, b""), "contentEncoding")
    content_type = _string(found.get(4, b""), "contentType")
    if encoding or content_type not in ("", CONTENT_TYPE):
        raise ProtobufError(f"the protobuf body wraps {content_type or 'protobuf'} data "
                            f"encoded {encoding!r}, which podling does not read")
    return Envelope(api_version, kind, found.get(2, b""))


def candidates(*, api_version: str, kind: str) -> tuple[str, str]:
    """The message full names an apiVersion and kind may stand for, most specific first.

    ``apps/v1`` Deployment is ``k8s.io.api.apps.v1.Deployment`` (a group's first label names its
    package, the core group's is ``core``); options kinds such as DeleteOptions, which every
    group version carries, are ``meta.v1`` messages.
    """
    group, _, version = api_version.rpartition("/")
    return f"k8s.io.api.{group.partition('.')[0] or 'core'}.{version}.{kind}", f"{META}{kind}"


def decode(body: bytes) -> dict[str, Any]:
    """The Kubernetes JSON form of a protobuf request body (``k8s\\0`` + ``runtime.Unknown``)."""
    envelope = unwrap(body)
    table = _table()
    for name in candidates(api_version=envelope.api_version, kind=envelope.kind):
        if name in table:
            obj = _message(envelope.raw, envelope.kind, name=name)
            return {"kind": envelope.kind, "apiVersion": envelope.api_version, **obj}
    raise ProtobufError(f"podling cannot read {envelope.kind} ({envelope.api_version}) sent as protobuf; "
                        f"send it as JSON")
