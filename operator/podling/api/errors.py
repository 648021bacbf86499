"""API errors as Kubernetes ``Status`` objects.

Every failure the API server answers with is a :class:`StatusError`; its ``status()`` is the
exact ``Status`` body Kubernetes would send for the same failure (kubectl prints its
``message`` and branches on ``reason``). Nothing else turns into an HTTP error: an exception
that is not a StatusError is a bug, logged and answered with a plain 500 InternalError.
"""

from __future__ import annotations

from typing import Any

from podling.api.resources import Resource


class StatusError(Exception):
    def __init__(
        self,
        *,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _qualified(resource: Resource) -> str:
    """``pods`` or ``deployments.apps``: how Kubernetes names a resource in messages."""
    return f"{resource.plural}.{resource.group}" if resource.group else resource.plural


def _details(resource: Resource, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": resource.plural}
    if resource.group:
        details["group"] = resource.group
    return details


def not_found(resource: Resource, name: str) -> StatusError:
    return StatusError(
        code=404,
        reason="NotFound",
        message=f'{_qualified(resource)} "{name}" not found',
        details=_details(resource, name),
    )


def already_exists(resource: Resource, name: str) -> StatusError:
    return StatusError(
        code=409,
        reason="AlreadyExists",
        message=f'{_qualified(resource)} "{name}" already exists',
        details=_details(resource, name),
    )


def conflict(resource: Resource, name: str, why: str) -> StatusError:
    return StatusError(
        code=409,
        reason="Conflict",
        message=f'Operation cannot be fulfilled on {_qualified(resource)} "{name}": {why}',
        details=_details(resource, name),
    )


def stale(resource: Resource, name: str) -> StatusError:
    return conflict(
        resource, name, "the object has been modified; please apply your changes to the latest version and try again"
    )


def invalid(resource: Resource, name: str, causes: list[dict[str, str]]) -> StatusError:
    """422 Invalid; each cause is ``{"reason", "message", "field"}``."""
    summary = ", ".join(f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes)
    details = _details(resource, name)
    details["kind"] = resource.kind
    details["causes"] = causes
    return StatusError(
        code=422,
        reason="Invalid",
        message=f'{resource.kind} "{name}" is invalid: {summary}' if len(causes) == 1
        else f'{resource.kind} "{name}" is invalid: [{summary}]',
        details=details,
    )


def forbidden(resource: Resource, name: str, why: str) -> StatusError:
    what = f'{_qualified(resource)} "{name}"' if name else _qualified(resource)
    return StatusError(code=403, reason="Forbidden", message=f"{what} is forbidden: {why}", details=_details(resource, name))


def gone(message: str) -> StatusError:
    return StatusError(code=410, reason="Expired", message=message)


def bad_request(message: str) -> StatusError:
    return StatusError(code=400, reason="BadRequest", message=message)


def unauthorized() -> StatusError:
    return StatusError(code=401, reason="Unauthorized", message="Unauthorized")


def method_not_allowed(message: str) -> StatusError:
    return StatusError(code=405, reason="MethodNotAllowed", message=message)


def unsupported_media_type(content_type: str) -> StatusError:
    return StatusError(code=415, reason="UnsupportedMediaType", message=f"the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json (got {content_type!r})")


def too_large(message: str) -> StatusError:
    return StatusError(code=413, reason="RequestEntityTooLarge", message=message)


def path_not_found(path: str) -> StatusError:
    return StatusError(code=404, reason="NotFound", message=f"the server could not find the requested resource ({path})")


def internal(message: str) -> StatusError:
    return StatusError(code=500, reason="InternalError", message=f"Internal error occurred: {message}")
