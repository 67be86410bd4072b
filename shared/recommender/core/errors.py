"""The domain errors: each carries one user-facing message; the CLI and the HTTP layer map them in one place."""

from __future__ import annotations


class RecommenderError(Exception):
    """Base of every error the service reports to a person; `str(err)` is the message to show."""

    #: The HTTP status the web layer answers with; the CLI ignores it.
    status_code: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(RecommenderError):
    """A setting is missing or malformed."""

    status_code = 500


class MissingExtra(ConfigError):
    """An optional package is needed but not installed (the light install leaves it out; `make devel` has all)."""


class InvalidInput(RecommenderError):
    """A request or command argument is malformed (HTTP 422)."""

    status_code = 422


class DataFileError(InvalidInput):
    """A training file cannot be used: missing, unreadable, wrong format or columns, or too little data."""


class NotFound(RecommenderError):
    """The thing asked for does not exist."""

    status_code = 404


class AlreadyExists(RecommenderError):
    """The thing to create is there already."""

    status_code = 409


class AuthError(RecommenderError):
    """Credentials or token refused (HTTP 401 with WWW-Authenticate: Bearer)."""

    status_code = 401


class Forbidden(RecommenderError):
    """The caller is known but may not do this: an API key without the scope, from an unlisted origin (HTTP 403)."""

    status_code = 403


class VersionUnavailable(RecommenderError):
    """No usable version of something versioned (a model, the product feed, the rules): none yet, nothing
    staged or earlier, or an artifact fails its checksum (HTTP 503)."""

    status_code = 503


class ModelUnavailable(VersionUnavailable):
    """No usable model: none trained yet, nothing staged, or an artifact fails its checksum (HTTP 503)."""


class PointerDamaged(VersionUnavailable):
    """An ACTIVE or STAGED pointer holds something other than a pointer (empty, truncated, edited by hand)."""


class Conflict(RecommenderError):
    """Another command changed the same pointer at the same time, and this one changed nothing (HTTP 409)."""

    status_code = 409


class ModelRefused(RecommenderError):
    """A model may not replace the active one: clearly worse on its held-out baskets, or not measurable against it
    (activation refused, HTTP 409). Not a failure of the command that trained it: the CLI exits with EXIT_CODE."""

    status_code = 409
    #: What `train`, `promote` and `activate` exit with: the model exists (staged) but is not active.
    EXIT_CODE = 3


class StorageError(RecommenderError):
    """The storage backend failed (unreachable bucket, permissions).

    The message names the key and the storage (for the log and the CLI); `public`, when given, says what failed
    without saying where, for HTTP clients (who may not even be logged in; the web layer also removes storage
    addresses and paths from whichever it shows).
    """

    status_code = 503

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public


class TooManyRequests(RecommenderError):
    """Too many failed attempts from this client, or requests over an API key's rate; retry after retry_after
    seconds (HTTP 429 with Retry-After)."""

    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Busy(RecommenderError):
    """The service is at capacity for this kind of work; retry after retry_after seconds (HTTP 503, Retry-After)."""

    status_code = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(StorageError):
    """What was sent cannot be stored durably right now, and none of it was acknowledged (HTTP 503, Retry-After)."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
