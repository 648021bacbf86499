"""``podling validate PATH...``: check manifests against podling's schemas, offline.

Invariant: the verdict on an object is the one podling's API server reaches with
``fieldValidation=Strict`` (what ``kubectl apply --validate=strict`` asks for): the same
resource table picks the schema, the same validators (``podling.api.schema``) judge it, and
an unknown field is an error. The command only reads files. Every problem is printed as
``FILE:LINE: KIND/NAME: FIELD: message``, at the line of the offending field (for a missing
field, of the object that lacks it), followed by a one-line summary; the exit code is 1 if
anything was wrong, else 0.
"""

from __future__ import annotations

from typing import Any

from podling.api import resources
from podling.api.manifests import Manifest, ManifestError, load_file, manifest_files
from podling.api.schema import validator


def run(*, paths: list[str]) -> int:
    try:
        files = manifest_files(paths)
    except ManifestError as e:
        print(e)
        return 1
    objects = problems = 0
    for path in files:
        try:
            manifests = load_file(path)
        except ManifestError as e:
            print(e)
            problems += 1
            continue
        for manifest in manifests:
            objects += 1
            found = sorted(_problems(manifest))
            problems += len(found)
            for line, text in found:
                print(f"{manifest.source_file}:{line}: {text}")
    verdict = f"{problems} problem{'s' * (problems != 1)}" if problems else "valid"
    print(f"{len(files)} file{'s' * (len(files) != 1)}, {objects} object{'s' * (objects != 1)}: {verdict}")
    return 1 if problems else 0


def _problems(manifest: Manifest) -> list[tuple[int, str]]:
    obj = manifest.obj
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not api_version or not kind:
        missing = " and ".join(f for f in ("apiVersion", "kind") if not obj.get(f))
        return [(manifest.line, f"object has no {missing}")]
    label = f"{kind}/{_name(obj)}"
    resource = resources.by_kind(api_version=str(api_version), kind=str(kind))
    if resource is None:
        unknown = f"{label}: kind {kind} in apiVersion {api_version} is not served by podling"
        return [(manifest.line_of(("kind",)), unknown)]
    result = validator(resource.definition).validate(obj)
    found = [(manifest.line_of(e.path), f"{label}: {e}") for e in result.errors]
    found += [(manifest.line_of(path), f"{label}: {field.removeprefix('.')}: unknown field")
              for field, path in zip(result.unknown_fields, result.unknown_paths)]
    return found


def _name(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return "<unnamed>"
    if metadata.get("name"):
        return str(metadata["name"])
    return f"{metadata['generateName']}*" if metadata.get("generateName") else "<unnamed>"
