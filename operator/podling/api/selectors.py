"""Label and field selectors: which objects a list, a watch or a controller is about.

Invariant: a selector is an immutable conjunction of requirements, valid by construction: every
way in (text, a ``LabelSelector`` object, a plain map) checks keys, values and operators the
way Kubernetes does and raises :class:`ParseError` naming the offending text, so ``matches``
never fails and two selectors with the same meaning print the same ``str``.

Kubernetes' edge cases, kept on purpose:

* A selector with no requirements matches everything (``""``, ``{}``, a ``LabelSelector``
  object with neither ``matchLabels`` nor ``matchExpressions``), but a *null* ``LabelSelector``
  object matches nothing. A Service or ReplicationController whose ``selector`` map is empty or
  missing has no selector at all: its controller skips it rather than select everything.
* ``!=`` and ``notin`` match objects that lack the key; ``in`` and ``=`` need it.
* ``>`` and ``<`` compare a label's value as an integer (``NodeSelectorRequirement``'s
  ``Gt``/``Lt``); a label that is not an integer does not match.
* A field selector only names fields its kind supports; any other is refused with
  ``field label not supported: X``, the message Kubernetes gives.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

Getter = Callable[[Mapping[str, Any]], str]


class ParseError(ValueError):
    """A selector that cannot be understood; the message quotes what was wrong."""


class Operator(enum.Enum):
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = ">"
    LESS_THAN = "<"


_OBJECT_OPERATORS = {"In": Operator.IN, "NotIn": Operator.NOT_IN, "Exists": Operator.EXISTS,
                     "DoesNotExist": Operator.DOES_NOT_EXIST}
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_NAME_RE = re.compile(_NAME)
_PREFIX_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_INTEGER_RE = re.compile(r"[+-]?[0-9]+")


def _check_key(key: str) -> None:
    if not isinstance(key, str):
        raise ParseError(f"invalid label key {key!r}: not a string")
    prefix, slash, name = key.partition("/") if "/" in key else ("", "", key)
    if slash and not (len(prefix) <= 253 and _PREFIX_RE.fullmatch(prefix)):
        raise ParseError(
            f"invalid label key {key!r}: the prefix must be a DNS subdomain (lowercase, at most 253 characters)"
        )
    if not _NAME_RE.fullmatch(name):
        raise ParseError(
            f"invalid label key {key!r}: the name must be at most 63 characters of letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit"
        )


def _check_value(value: str) -> None:
    if not isinstance(value, str):
        raise ParseError(f"invalid label value {value!r}: not a string")
    if value and not _NAME_RE.fullmatch(value):
        raise ParseError(
            f"invalid label value {value!r}: at most 63 characters of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )


# ---- label selectors -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Requirement:
    """One condition on one label key."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_key(self.key)
        for value in self.values:
            _check_value(value)
        count, op = len(self.values), self.operator
        if op in (Operator.IN, Operator.NOT_IN) and not count:
            raise ParseError(f"{self.key}: the {op.value!r} operator needs at least one value")
        if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and count:
            raise ParseError(f"{self.key}: the {op.name.lower()} operator takes no values, got {list(self.values)}")
        if op in (Operator.EQUALS, Operator.NOT_EQUALS, Operator.GREATER_THAN, Operator.LESS_THAN) and count != 1:
            raise ParseError(f"{self.key}: the {op.value!r} operator takes exactly one value, got {list(self.values)}")
        if op in (Operator.GREATER_THAN, Operator.LESS_THAN) and not _INTEGER_RE.fullmatch(self.values[0]):
            raise ParseError(f"{self.key}: the {op.value!r} operator needs an integer, got {self.values[0]!r}")
        object.__setattr__(self, "values", tuple(sorted(set(self.values))))

    def matches(self, labels: Mapping[str, str]) -> bool:
        op, present = self.operator, self.key in labels
        if op is Operator.EXISTS:
            return present
        if op is Operator.DOES_NOT_EXIST:
            return not present
        if op in (Operator.NOT_EQUALS, Operator.NOT_IN):
            return not present or labels[self.key] not in self.values
        if not present:
            return False
        if op in (Operator.EQUALS, Operator.IN):
            return labels[self.key] in self.values
        if not _INTEGER_RE.fullmatch(labels[self.key]):
            return False
        actual, bound = int(labels[self.key]), int(self.values[0])
        return actual > bound if op is Operator.GREATER_THAN else actual < bound

    def __str__(self) -> str:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key
        if op is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        if op in (Operator.IN, Operator.NOT_IN):
            return f"{self.key} {op.value} ({','.join(self.values)})"
        return f"{self.key}{op.value}{self.values[0]}"


@dataclasses.dataclass(frozen=True, slots=True)
class LabelSelector:
    """A conjunction of requirements; ``matches_nothing`` only for a null selector object."""

    requirements: tuple[Requirement, ...] = ()
    matches_nothing: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "requirements", tuple(sorted(self.requirements, key=lambda r: r.key)))

    @property
    def empty(self) -> bool:
        """True when the selector matches every object."""
        return not self.requirements and not self.matches_nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return not self.matches_nothing and all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def from_map(selector: Mapping[str, str]) -> LabelSelector:
    """The selector of a plain map (a Service's or ReplicationController's): every pair must match."""
    return LabelSelector(tuple(Requirement(k, Operator.EQUALS, (v,)) for k, v in selector.items()))


def from_label_selector(selector: Mapping[str, Any] | None) -> LabelSelector:
    """The selector of a ``LabelSelector`` object; ``None`` selects nothing, ``{}`` everything."""
    if selector is None:
        return LabelSelector(matches_nothing=True)
    requirements = list(from_map(selector.get("matchLabels") or {}).requirements)
    for index, expression in enumerate(selector.get("matchExpressions") or ()):
        operator = expression.get("operator")
        if operator not in _OBJECT_OPERATORS:
            raise ParseError(
                f"matchExpressions[{index}]: {operator!r} is not a valid label selector operator "
                f"(want one of {', '.join(_OBJECT_OPERATORS)})"
            )
        values = expression.get("values") or ()
        requirements.append(Requirement(expression.get("key", ""), _OBJECT_OPERATORS[operator], tuple(values)))
    return LabelSelector(tuple(requirements))


def format_label_selector(selector: Mapping[str, Any] | None) -> str:
    """A ``LabelSelector`` object as text (``app=web,tier in (a,b)``); ``<error>`` if invalid."""
    try:
        return str(from_label_selector(selector))
    except ParseError:
        return "<error>"


class _Token(NamedTuple):
    kind: str  # "symbol", "word" (a key, a value, in, notin) or "end"
    text: str
    position: int


class _Tokens:
    """The tokens of a label selector, read one at a time."""

    _PATTERN = re.compile(r"(!=|==|=|!|\(|\)|,|<|>)|([^\s!=(),<>]+)")

    def __init__(self, text: str) -> None:
        self.text = text
        self._tokens = [_Token("symbol" if m.lastindex == 1 else "word", m.group(), m.start())
                        for m in self._PATTERN.finditer(text)]
        self._index = 0

    def peek(self) -> _Token:
        if self._index < len(self._tokens):
            return self._tokens[self._index]
        return _Token("end", "", len(self.text))

    def take(self) -> _Token:
        token = self.peek()
        self._index += 1
        return token

    def at(self, kind: str, text: str) -> bool:
        return self.peek() == (kind, text, self.peek().position)

    def error(self, expected: str) -> ParseError:
        token = self.peek()
        found = "end of input" if token.kind == "end" else repr(token.text)
        return ParseError(
            f"invalid label selector {self.text!r}: expected {expected} at position {token.position}, found {found}"
        )

    def word(self, expected: str) -> str:
        if self.peek().kind != "word":
            raise self.error(expected)
        return self.take().text


_SYMBOL_OPERATORS = {"=": Operator.EQUALS, "==": Operator.EQUALS, "!=": Operator.NOT_EQUALS,
                     "<": Operator.LESS_THAN, ">": Operator.GREATER_THAN}


def parse_label_selector(text: str) -> LabelSelector:
    """Parse ``app=web,tier in (a,b),!canary,env!=prod,release``; ``""`` selects everything."""
    tokens = _Tokens(text)
    requirements = []
    while tokens.peek().kind != "end":
        key, operator, values = _parse_requirement(tokens)
        try:
            requirements.append(Requirement(key, operator, values))
        except ParseError as err:
            raise ParseError(f"invalid label selector {text!r}: {err}") from None
        if tokens.peek().kind != "end":
            if not tokens.at("symbol", ","):
                raise tokens.error("',' or end of input")
            tokens.take()
            if tokens.peek().kind == "end":
                raise tokens.error("a requirement after ','")
    return LabelSelector(tuple(requirements))


def _parse_requirement(tokens: _Tokens) -> tuple[str, Operator, tuple[str, ...]]:
    if tokens.at("symbol", "!"):
        tokens.take()
        key = tokens.word("a label key after '!'")
        if not (tokens.peek().kind == "end" or tokens.at("symbol", ",")):
            raise tokens.error(f"',' or end of input after '!{key}'")
        return key, Operator.DOES_NOT_EXIST, ()
    key = tokens.word("a label key")
    if tokens.peek().kind == "end" or tokens.at("symbol", ","):
        return key, Operator.EXISTS, ()
    token = tokens.peek()
    if token.kind == "symbol" and token.text in _SYMBOL_OPERATORS:
        tokens.take()
        value = tokens.take().text if tokens.peek().kind == "word" else ""
        return key, _SYMBOL_OPERATORS[token.text], (value,)
    if token.kind == "word" and token.text in ("in", "notin"):
        tokens.take()
        return key, Operator.IN if token.text == "in" else Operator.NOT_IN, _parse_values(tokens)
    raise tokens.error(f"an operator (=, ==, !=, in, notin, <, >), ',' or end of input after {key!r}")


def _parse_values(tokens: _Tokens) -> tuple[str, ...]:
    if not tokens.at("symbol", "("):
        raise tokens.error("'('")
    tokens.take()
    values = []
    while True:
        values.append(tokens.take().text if tokens.peek().kind == "word" else "")
        if tokens.at("symbol", ")"):
            tokens.take()
            return tuple(values)
        if not tokens.at("symbol", ","):
            raise tokens.error("',' or ')'")
        tokens.take()


# ---- field selectors -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    value: str
    negated: bool = False

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
        return f"{self.field}{'!=' if self.negated else '='}{escaped}"


@dataclasses.dataclass(frozen=True, slots=True)
class FieldSelector:
    """Requirements on fields, each read from an object by a getter of its kind."""

    requirements: tuple[FieldRequirement, ...]
    getters: Mapping[str, Getter] = dataclasses.field(compare=False, repr=False)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((self.getters[r.field](obj) == r.value) != r.negated for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def parse_field_selector(text: str, *, kind: str = "", getters: Mapping[str, Getter] | None = None) -> FieldSelector:
    """Parse ``metadata.name=web,status.phase!=Failed`` for one kind.

    The fields are those :func:`field_getters` gives ``kind``, or ``getters`` when given.
    Values may escape ``\\``, ``,`` and ``=`` with a backslash, as ``kubectl`` does.
    """
    getters = field_getters(kind) if getters is None else getters
    requirements = []
    for term in _split_terms(text):
        if not term.strip():
            continue
        field, operator, raw = _split_term(term)
        if operator is None:
            raise ParseError(f"invalid field selector {text!r}: {term!r} has no operator (=, == or !=)")
        if field not in getters:
            raise ParseError(f"field label not supported: {field}")
        requirements.append(FieldRequirement(field, _unescape(raw.strip(), text), negated=operator == "!="))
    return FieldSelector(tuple(requirements), getters)


def _split_terms(text: str) -> Iterable[str]:
    term, escaped = [], False
    for char in text:
        if char == "," and not escaped:
            yield "".join(term)
            term = []
            continue
        escaped = char == "\\" and not escaped
        term.append(char)
    yield "".join(term)


def _split_term(term: str) -> tuple[str, str | None, str]:
    for index in range(len(term)):
        for operator in ("!=", "==", "="):
            if term.startswith(operator, index):
                return term[:index].strip(), operator, term[index + len(operator):]
    return term, None, ""


def _unescape(value: str, text: str) -> str:
    out, chars = [], iter(value)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            if following not in ("\\", ",", "="):
                raise ParseError(f"invalid field selector {text!r}: invalid escape sequence '\\{following}'")
            out.append(following)
        elif char in ",=":
            raise ParseError(f"invalid field selector {text!r}: unescaped {char!r} in value {value!r}")
        else:
            out.append(char)
    return "".join(out)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _at(path: str, default: str = "") -> Getter:
    steps = path.split(".")

    def get(obj: Mapping[str, Any]) -> str:
        value: Any = obj
        for step in steps:
            value = value.get(step) if isinstance(value, Mapping) else None
        return default if value is None else _text(value)

    return get


def _plain(*paths: str) -> dict[str, Getter]:
    return {path: _at(path) for path in paths}


_COMMON_FIELDS = _plain("metadata.name", "metadata.namespace")
_KIND_FIELDS: Mapping[str, Mapping[str, Getter]] = {
    "Pod": {
        **_plain("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                 "status.phase", "status.podIP", "status.nominatedNodeName"),
        "spec.hostNetwork": _at("spec.hostNetwork", "false"),
    },
    "Event": {
        **_plain(*(f"involvedObject.{name}" for name in ("kind", "namespace", "name", "uid", "apiVersion",
                                                          "resourceVersion", "fieldPath")),
                 "reason", "reportingComponent", "type"),
        "source": _at("source.component"),
    },
    "Node": {"spec.unschedulable": _at("spec.unschedulable", "false")},
    "Secret": _plain("type"),
    "Namespace": _plain("status.phase"),
    "ReplicaSet": {"status.replicas": _at("status.replicas", "0")},
    "ReplicationController": {"status.replicas": _at("status.replicas", "0")},
}


def field_getters(kind: str) -> Mapping[str, Getter]:
    """The field labels a kind can be selected by, each with its getter (value as text)."""
    return {**_COMMON_FIELDS, **_KIND_FIELDS.get(kind, {})}
