"""One hierarchy for what a caller did wrong or cannot have right now.

Services raise these; the web process maps them once to JSON (api/errors.py) and once to the problem page
(web/templating.py), by the class's `status`. The message is for the person who asked: it says what is wrong,
and never echoes a (possibly huge) input back. Each class also derives from the builtin it refines, so code
that catches `ValueError` or `LookupError` keeps working.
"""

from __future__ import annotations

INT64_MAX = 2**63 - 1  # the largest id Postgres' bigint holds: larger ids are a 422, not a database error


class DomainError(Exception):
    """A refusal with an HTTP meaning; `status` says which (a subclass's default, or one given for this case)."""

    status: int = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status  # this case answers another status than its class

    @property
    def headers(self) -> dict[str, str]:
        return {}


class Invalid(DomainError, ValueError):
    """The request names something impossible (a field's value, a combination): 422, "field: why"."""

    status = 422


class NotFound(DomainError, LookupError):
    status = 404


class CursorError(Invalid):
    """A page cursor that is not one we handed out (or belongs to another order)."""


class Forbidden(DomainError):
    status = 403


class Conflict(DomainError):
    """The request is fine but the state does not allow it (already decided, a name taken, a move refused)."""

    status = 409


class TooLarge(DomainError):
    status = 413


class RateLimited(DomainError):
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Unavailable(DomainError):
    """A part we need (Temporal, the database) does not answer now; retrying later may work."""

    status = 503
