"""One exception hierarchy for the whole platform.

Each error carries an HTTP status and a short problem type so the hub can answer with
RFC 9457 problem details and the CLI with one line and an exit code.
"""

from __future__ import annotations


class MedcloudError(Exception):
    """Base of every error medcloud raises on purpose."""

    status: int = 500
    type_slug: str = "internal-error"
    title: str = "Internal error"
    exit_code: int = 1

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(MedcloudError):
    """The caller sent something we cannot accept (malformed file, bad parameter)."""

    status = 400
    type_slug = "invalid-input"
    title = "Invalid input"
    exit_code = 2


class UnsupportedFormat(InvalidInput):
    """A file that is neither DICOM nor a supported image."""

    status = 415
    type_slug = "unsupported-format"
    title = "Unsupported format"


class TooLarge(InvalidInput):
    """A file over the configured size limit."""

    status = 413
    type_slug = "too-large"
    title = "Payload too large"


class PathEscape(InvalidInput):
    """A path that resolves outside the folder it must stay in."""

    type_slug = "path-escape"
    title = "Path escapes its root"


class RequestTimeout(InvalidInput):
    """The client stopped sending the body it announced."""

    status = 408
    type_slug = "request-timeout"
    title = "Request timeout"


class Unauthenticated(MedcloudError):
    """No credential, or one that is wrong or expired.

    `subject` names the holder of a token that was real but is no longer good (revoked, expired), so
    that the refusal is audited under that token rather than as anonymous.
    """

    status = 401
    type_slug = "unauthenticated"
    title = "Authentication required"
    exit_code = 3

    def __init__(self, detail: str, *, subject: str | None = None) -> None:
        super().__init__(detail)
        self.subject = subject


class Forbidden(MedcloudError):
    """A known identity asked for something its role or grants do not allow."""

    status = 403
    type_slug = "forbidden"
    title = "Forbidden"
    exit_code = 3


class NotFound(MedcloudError):
    status = 404
    type_slug = "not-found"
    title = "Not found"
    exit_code = 4


class Conflict(MedcloudError):
    """The request contradicts what is stored (e.g. same SOP Instance UID, other bytes)."""

    status = 409
    type_slug = "conflict"
    title = "Conflict"
    exit_code = 5


class ConfigError(MedcloudError):
    type_slug = "config-error"
    title = "Configuration error"
    exit_code = 6


class StorageError(MedcloudError):
    """The blob store or catalog could not take a write (disk full, volume read-only): retry later."""

    status = 503
    type_slug = "storage-unavailable"
    title = "Storage unavailable"
    exit_code = 8


class IntegrityError(MedcloudError):
    """Stored data failed a check (hash chain broken, blob hash mismatch)."""

    type_slug = "integrity-error"
    title = "Integrity check failed"
    exit_code = 7


class SecondFactorRequired(Forbidden):
    """A person's session has not passed its passkey (or not recently enough for an admin action)."""

    type_slug = "second-factor-required"
    title = "Second factor required"


class TooManyAttempts(MedcloudError):
    """Locked after repeated failed authentications; the lock lifts by itself."""

    status = 429
    type_slug = "too-many-attempts"
    title = "Too many failed attempts"
    exit_code = 3

    def __init__(self, detail: str, *, retry_after: int = 60) -> None:
        super().__init__(detail)
        self.retry_after = retry_after  # seconds, sent as Retry-After (a gateway pauses and retries)
