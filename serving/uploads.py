"""Uploads: a multipart/form-data body streamed by python-multipart straight into a private folder.

``receive`` makes a folder with ``tempfile.mkdtemp`` (mode 0700), writes each file part under a fixed
name (its field name: ``text``, ``image``, ``audio``; the client's file name is never used), counts
bytes while streaming and stops at the cap (``UploadTooLarge``, 413) before the rest of the body is read.
A typed ``text`` field is written to the folder too, so the pipeline's own decoder (strict UTF-8) reads
it exactly as it reads a text file. The caller removes the folder when the request is done (``discard``).
A body that is not multipart is ``UnsupportedMediaType`` (415), as is a file part whose content type
does not fit its field (an image field must be ``image/*`` or ``application/octet-stream``, ...).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field

from .errors import BadRequest, UnsupportedMediaType, UploadTooLarge

MEDIA_FIELDS = ("text", "image", "audio")
# Content types accepted per file field; application/octet-stream (unknown) is always accepted.
# A video's sound track counts as audio (a phone video, a screen recording with speech).
ACCEPTED = {"text": ("text/",), "image": ("image/",), "audio": ("audio/", "video/", "application/ogg")}
MAX_PARTS = 8
MAX_PARAM_BYTES = 1000  # small form fields such as k and modality


@dataclass
class Upload:
    folder: str
    files: dict[str, int] = field(default_factory=dict)  # field name -> bytes written to folder/<field>
    params: dict[str, str] = field(default_factory=dict)  # small fields (k, modality)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _check_type(name: str, content_type: str) -> None:
    kind = content_type.split(";")[0].strip().lower()
    if kind in ("", "application/octet-stream") or kind.startswith(ACCEPTED[name]):
        return
    raise UnsupportedMediaType(f"field {name!r}: content type {kind!r} is not accepted "
                               f"(use {' or '.join(ACCEPTED[name])} or application/octet-stream)")


class _Parts:
    """python-multipart callbacks: each part goes to a file in the upload folder or a small buffer."""

    def __init__(self, upload: Upload, params: tuple[str, ...], max_bytes: int):
        self.upload, self.allowed, self.max_bytes = upload, MEDIA_FIELDS + params, max_bytes
        self.headers: dict[bytes, bytes] = {}
        self.header_field = self.header_value = b""
        self.name, self.sink, self.size, self.value, self.parts = "", None, 0, bytearray(), 0

    def callbacks(self) -> dict:
        return {"on_part_begin": self.begin, "on_header_field": self.add_field, "on_header_value": self.add_value,
                "on_header_end": self.end_header, "on_headers_finished": self.open, "on_part_data": self.data,
                "on_part_end": self.close}

    def begin(self) -> None:
        self.headers, self.header_field, self.header_value = {}, b"", b""
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise BadRequest(f"too many form parts (at most {MAX_PARTS})")

    def add_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def add_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def end_header(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field = self.header_value = b""

    def open(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("latin-1")
        if name not in self.allowed:
            raise BadRequest(f"unknown form field {name!r} (expected: {', '.join(self.allowed)})")
        if name in self.upload.files or name in self.upload.params:
            raise BadRequest(f"form field {name!r} given twice")
        self.name, self.size, self.value = name, 0, bytearray()
        is_file = b"filename" in options
        if is_file and name not in MEDIA_FIELDS:
            raise BadRequest(f"form field {name!r} must be a plain value, not a file")
        if is_file:
            _check_type(name, self.headers.get(b"content-type", b"").decode("latin-1"))
        if name in MEDIA_FIELDS:  # typed text goes to a file too: the pipeline decodes it
            self.sink = open(os.path.join(self.upload.folder, name), "wb")

    def data(self, data: bytes, start: int, end: int) -> None:
        self.size += end - start
        limit = self.max_bytes if self.sink else MAX_PARAM_BYTES
        if self.size > limit:
            raise UploadTooLarge(f"field {self.name!r} is over {limit:,} bytes"
                                 + (" (serve.max_upload_mb)" if self.sink else ""))
        if self.sink:
            self.sink.write(data[start:end])
        else:
            self.value += data[start:end]

    def close(self) -> None:
        if self.sink:
            self.sink.close()
            self.sink = None
            self.upload.files[self.name] = self.size
        else:
            try:
                self.upload.params[self.name] = self.value.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"form field {self.name!r} is not valid UTF-8") from None

    def abort(self) -> None:
        if self.sink:
            self.sink.close()


async def receive(request, max_bytes: int, params: tuple[str, ...] = ()) -> Upload:
    """Stream the request body into a new private folder; on any error the folder is already gone."""
    from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        shown = kind.decode("latin-1") or "none"
        raise UnsupportedMediaType(f"expected a multipart/form-data body, got content type {shown!r}")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > len(MEDIA_FIELDS) * max_bytes + MAX_PARTS * (MAX_PARAM_BYTES + 1024):
        raise UploadTooLarge(f"request body of {int(length):,} bytes is over the upload caps")
    upload = Upload(tempfile.mkdtemp(prefix="mmp-upload-"))  # mode 0700
    parts = _Parts(upload, params, max_bytes)
    try:
        parser = MultipartParser(options[b"boundary"], parts.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
        if parser.state != MultipartState.END:
            raise BadRequest("the multipart body ended before its closing boundary")
    except BaseException as exc:
        parts.abort()
        upload.discard()
        if isinstance(exc, Exception) and type(exc).__module__.startswith("python_multipart"):
            raise BadRequest(f"malformed multipart body: {exc}") from None
        raise
    finally:
        parts.abort()
    return upload
