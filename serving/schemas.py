"""Response shapes of the HTTP API (pydantic models: they document ``/docs`` and check what is sent)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ModalityError(BaseModel):
    modality: str = Field(examples=["image"])
    error: str = Field(description="the batch pipeline's error type", examples=["ImageDecodeError"])
    message: str


class Neighbour(BaseModel):
    id: str
    score: float = Field(description="mean cosine over the modalities the query and the item share, times the share of the query's modalities the item has")
    label: str
    split: str = ""
    modalities: dict[str, float] = Field({}, description="the cosine per modality behind the score")
    text: str | None = Field(None, description="the past ticket's cleaned text")
    image: str | None = Field(None, description="URL of the past ticket's screenshot thumbnail")


class Prediction(BaseModel):
    predicted: str
    probabilities: dict[str, float]
    missing_modalities: list[str]
    errors: list[ModalityError]
    similar: list[Neighbour]
    similar_error: str | None = Field(None, description="why no similar tickets could be searched (e.g. nothing indexed)")
    timings_ms: dict[str, float]


class SearchResults(BaseModel):
    results: list[Neighbour]
    missing_modalities: list[str]
    errors: list[ModalityError]
    timings_ms: dict[str, float]


class ItemInfo(BaseModel):
    id: str
    split: str
    label: str
    modalities: list[str]
    meta: dict[str, str]
    text: str | None
    image: str | None


class Problem(BaseModel):
    error: str = Field(examples=["NoUsableModality"])
    message: str
    errors: list[ModalityError] = []


# The multipart form both POST endpoints read (parsed by serving.uploads, so documented by hand).
def upload_form(extra: dict | None = None) -> dict:
    fields = {
        "text": {"type": "string", "description": "the message (a form field, or a UTF-8 text file)"},
        "image": {"type": "string", "format": "binary", "description": "a screenshot (PNG, JPEG, ...)"},
        "audio": {"type": "string", "format": "binary", "description": "a voice note (WAV, FLAC, OGG, ...)"},
        **(extra or {}),
    }
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": fields, "description": "any non-empty subset of text, image, audio"}}}}}


ERROR_RESPONSES = {status: {"model": Problem, "description": why} for status, why in {
    401: "missing or wrong bearer token (when the server has one)",
    413: "an uploaded file is over serve.max_upload_mb",
    415: "not multipart/form-data, or a file of the wrong content type",
    422: "no usable modality (each failure named with the pipeline's error type), or a bad parameter",
    503: "models still loading, or the queue is full (Retry-After)",
}.items()}
