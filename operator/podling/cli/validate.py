"""``podling validate PATH...``: check manifests against podling's schemas, offline.

Invariant: the verdict on an object is the one podling's API server reaches with
``fieldValidation=Strict`` (what ``kubectl apply --validate=strict`` asks for): the same
resource table picks the schema, the same validators (``podling.api.schema``) judge it, and
an unknown field is an error; the verdict is :func:`podling.gitops.render.check`, the one the
GitOps operator gives before it syncs. The command only reads files. Every problem is printed as
``FILE:LINE: KIND/NAME: FIELD: message``, at the line of the offending field (for a missing
field, of the object that lacks it), followed by a one-line summary; the exit code is 1 if
anything was wrong, else 0.
"""

from __future__ import annotations

from podling.api.manifests import ManifestError, load_file, manifest_files
from podling.gitops.render import check


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
            _, found = check(manifest, file=manifest.source_file)
            problems += len(found)
            for problem in found:
                print(problem)
    verdict = f"{problems} problem{'s' * (problems != 1)}" if problems else "valid"
    print(f"{len(files)} file{'s' * (len(files) != 1)}, {objects} object{'s' * (objects != 1)}: {verdict}")
    return 1 if problems else 0
