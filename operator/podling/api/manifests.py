"""Manifest files: YAML or JSON documents read into plain objects that remember their lines.

Invariant: a file either loads completely, every document a mapping, into
:class:`Manifest` values (plain ``dict``/``list``/scalar JSON data, as the API receives it)
or raises one :class:`ManifestError` naming the file and line; nothing half-loaded escapes.
A manifest keeps the round-trip YAML tree it came from, so ``line_of(path)`` answers the line
of any JSON path inside it (for a path that does not exist, the line of its deepest existing
ancestor: where a missing required field belongs).

Scalars are read the way kubectl reads them (sigs.k8s.io/yaml on go-yaml v2: YAML 1.1), so
a manifest means here what it means to ``kubectl apply``: unquoted ``yes``/``no``/``on``/
``off`` are booleans and ``0755`` is octal, while timestamps and ``1:20`` stay strings.
A ``kind: List`` document stands for its items, each a manifest of its own.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.scalarbool import ScalarBoolean

SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(Exception):
    def __init__(self, *, source_file: str, line: int | None, message: str) -> None:
        super().__init__(f"{source_file}:{line}: {message}" if line else f"{source_file}: {message}")
        self.source_file = source_file
        self.line = line
        self.message = message


@dataclasses.dataclass(frozen=True, slots=True)
class Manifest:
    obj: dict[str, Any]  # plain JSON data
    source_file: str
    line: int  # 1-based line where the object starts
    _node: CommentedMap = dataclasses.field(repr=False, compare=False)

    def line_of(self, path: Sequence[str | int]) -> int:
        """The 1-based line of a JSON path inside the object, or of its deepest existing ancestor."""
        node: Any = self._node
        line = self.line
        for step in path:
            try:
                if isinstance(node, CommentedMap):
                    row, _ = node.lc.key(step)
                elif isinstance(node, CommentedSeq) and isinstance(step, int):
                    row, _ = node.lc.item(step)
                else:
                    break
                node = node[step]
            except (KeyError, IndexError, TypeError):
                break
            line = row + 1
        return line


class _Yaml11Resolver(VersionedResolver):
    """YAML 1.1 for every document of a stream (ruamel's ``version`` covers only the first)."""

    @property
    def processing_version(self) -> tuple[int, int]:
        return (1, 1)


class _KubectlConstructor(RoundTripConstructor):
    """YAML 1.1 as go-yaml v2 reads it into untyped JSON: no timestamps, no base-60 numbers."""

    def construct_text(self, node: Any) -> str:
        return str(node.value)

    def construct_decimal_int(self, node: Any) -> Any:
        return str(node.value) if ":" in node.value else self.construct_yaml_int(node)

    def construct_decimal_float(self, node: Any) -> Any:
        return str(node.value) if ":" in node.value else self.construct_yaml_float(node)


_KubectlConstructor.add_constructor("tag:yaml.org,2002:timestamp", _KubectlConstructor.construct_text)
_KubectlConstructor.add_constructor("tag:yaml.org,2002:int", _KubectlConstructor.construct_decimal_int)
_KubectlConstructor.add_constructor("tag:yaml.org,2002:float", _KubectlConstructor.construct_decimal_float)


def manifest_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The files named, and the manifest files (.yaml, .yml, .json) under the directories named.

    Hidden files and directories (``.git``) are skipped inside directories; a file named
    explicitly is taken whatever its name. A path that does not exist is a ManifestError.
    """
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found.extend(sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix in SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            ))
        elif path.is_file():
            found.append(path)
        else:
            raise ManifestError(source_file=str(path), line=None, message="no such file or directory")
    return found


def load_file(path: str | os.PathLike[str]) -> list[Manifest]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(source_file=str(path), line=None, message=str(e)) from e
    return load_text(text, source_file=str(path))


def load_text(text: str, *, source_file: str) -> list[Manifest]:
    """Every object in a (multi-document) YAML or JSON text; empty documents are skipped."""
    yaml = YAML(typ="rt")
    yaml.Resolver = _Yaml11Resolver
    yaml.Constructor = _KubectlConstructor
    try:
        documents = list(yaml.load_all(text))
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = f"{e.problem} ({e.context})" if e.context else str(e.problem)
        raise ManifestError(source_file=source_file, line=mark.line + 1 if mark else None, message=problem) from e
    except YAMLError as e:
        raise ManifestError(source_file=source_file, line=None, message=str(e)) from e
    manifests: list[Manifest] = []
    for document in documents:
        if document is None:
            continue
        if not isinstance(document, CommentedMap):
            line = document.lc.line + 1 if isinstance(document, CommentedSeq) else None
            raise ManifestError(source_file=source_file, line=line,
                                message="a document must be an object with apiVersion and kind")
        manifests.extend(_objects(document, source_file=source_file))
    return manifests


def _objects(node: CommentedMap, *, source_file: str) -> list[Manifest]:
    if node.get("apiVersion") == "v1" and node.get("kind") == "List" and isinstance(node.get("items"), CommentedSeq):
        items = node["items"]
        for index, item in enumerate(items):
            if not isinstance(item, CommentedMap):
                raise ManifestError(source_file=source_file, line=items.lc.item(index)[0] + 1,
                                    message="an item of a List must be an object with apiVersion and kind")
        return [m for item in items for m in _objects(item, source_file=source_file)]
    return [Manifest(obj=_plain(node), source_file=source_file, line=node.lc.line + 1, _node=node)]


def _plain(value: Any) -> Any:
    """JSON data of a round-trip YAML value (keys as strings, as sigs.k8s.io/yaml makes them)."""
    if isinstance(value, dict):
        return {_key(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, bool | ScalarBoolean) or value is None:  # ScalarBoolean (anchored) is an int
        return None if value is None else bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(_plain(key))
