"""Domain errors of the serving path, and the one place they map to HTTP statuses: each class's ``status``.

Handlers raise or receive these; handlers.errors_middleware alone turns them into responses (``error_body``).
"""
from __future__ import annotations

from typing import Any


class ServingError(Exception):
    """Base of every error a client may see. ``code`` is a stable machine-readable name."""

    code = "internal"
    status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(ServingError):
    code, status = "bad_request", 400


class PayloadTooLarge(ServingError):
    code, status = "payload_too_large", 413


class UnsupportedMediaType(ServingError):
    code, status = "unsupported_media_type", 415


class Unauthorized(ServingError):
    code, status = "unauthorized", 401


class ModelNotFound(ServingError):
    code, status = "model_not_found", 404


class RouteNotFound(ServingError):
    """No such path (the lean predict listener; aiohttp answers its own 404s on the main port)."""

    code, status = "not_found", 404


class MethodNotAllowed(ServingError):
    """The path exists for other methods: ``allow`` lists them (sent as the Allow header too)."""

    code, status = "method_not_allowed", 405

    def __init__(self, message: str, allow: str) -> None:
        super().__init__(message, allow=allow)


class RetryLater(ServingError):
    """A 503 the client should retry after ``retry_after`` seconds (sent as Retry-After)."""

    status = 503

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class NotReady(RetryLater):
    """No worker can take queries (none connected, or the model's shape is not known yet)."""

    code = "not_ready"


class Overloaded(RetryLater):
    """Admission is full."""

    code = "overloaded"


class ShuttingDown(ServingError):
    code, status = "shutting_down", 503


class DeadlineExceeded(ServingError):
    """A query had no answer by its deadline."""

    code, status = "deadline_exceeded", 504


class WorkerError(Exception):
    """A worker could not answer one request (internal; retried or decoded around)."""


class WorkerUnavailable(WorkerError):
    """The connection to a worker is down or was lost with the request in flight."""


class WorkerFailed(WorkerError):
    """The worker replied with an error message."""


class ConfigError(ValueError):
    """A setting is invalid; the message says which and how to fix it."""


def error_body(exc: ServingError) -> dict[str, Any]:
    """JSON body of an error response: {"error": message, "code": name, ...details}."""
    body: dict[str, Any] = {"error": exc.message, "code": exc.code}
    body.update({k: v for k, v in exc.details.items() if v is not None})
    return body
