"""Request-level errors of the HTTP service: each carries its HTTP status and a type name.

The app turns any of them into ``{"error": type, "message": ..., "errors": [per modality]}`` with that
status. Per-modality failures keep the batch pipeline's own error types (``ImageDecodeError``,
``EmptyAudio``, ...) in ``errors``.
"""

from __future__ import annotations


class RequestError(Exception):
    status = 400

    def __init__(self, message: str, errors: list[dict] | None = None):
        super().__init__(message)
        self.errors = errors or []

    @property
    def kind(self) -> str:
        return type(self).__name__


class BadRequest(RequestError):
    status = 400


class Unauthorized(RequestError):
    status = 401


class CrossSite(RequestError):
    """A request another site's page made with this page's session (or to sign in)."""
    status = 403


class NotFound(RequestError):
    status = 404


class UploadTooLarge(RequestError):
    status = 413


class UnsupportedMediaType(RequestError):
    status = 415


class NoUsableModality(RequestError):
    """Every modality the request carried failed (or it carried none the model uses)."""

    status = 422


class InvalidParameter(RequestError):
    status = 422


class Overloaded(RequestError):
    """The bounded queue is full: answered 503 with Retry-After, never queued without bound."""

    status = 503


class NotReady(RequestError):
    status = 503
