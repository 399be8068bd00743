"""Domain errors map to HTTP statuses in one place: every ServingError, and so its status, is declared
in frontend/errors.py (handlers.errors_middleware sends it)."""
from __future__ import annotations

import frontend.handlers  # noqa: F401 (import every module that could declare an error)
import frontend.v2  # noqa: F401
from frontend import errors


def subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]


def test_every_serving_error_and_its_status_is_declared_in_errors() -> None:
    found = subclasses(errors.ServingError)
    assert {c.__name__ for c in found} >= {"BadRequest", "ModelNotFound", "NotReady", "DeadlineExceeded"}
    assert [c.__name__ for c in found if c.__module__ != "frontend.errors"] == []
    assert all(400 <= c.status < 600 for c in found)
