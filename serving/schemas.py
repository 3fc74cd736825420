"""Response shapes of the HTTP API (pydantic models: they document ``/docs`` and check what is sent)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ModalityError(BaseModel):
    modality: str = Field(examples=["image"])
    error: str = Field(description="the batch pipeline's error type", examples=["ImageDecodeError"])
    message: str


WORDS = ('the ticket\'s words, those it has: "text" (the typed message, cleaned), "said" (what its voice note '
         'says), "on_screen" (the text on its screenshot, lines joined by newlines)')


class Neighbour(BaseModel):
    id: str
    score: float = Field(description="the channels' cosines summed over the query's channels (words: the best cosine "
                         "of the query's words with the ticket's message, transcript or screen text; image; audio), "
                         "a channel the ticket lacks counting 0")
    label: str
    split: str = ""
    modalities: dict[str, float] = Field({}, description="the cosine per space behind the score (text, speech and "
                                         "screen: the best over the query's words)")
    matched: str | None = Field(None, description="where the ticket's words matched: text (its message), speech (what "
                                "its voice note says) or screen (its screenshot's text); null if no words did",
                                examples=["speech"])
    query_words: str | None = Field(None, description="which of the query's words matched: text, speech (the uploaded "
                                    "note's transcript) or screen (the uploaded screenshot's text)")
    words: dict[str, str] = Field({}, description=WORDS, examples=[{"said": "my refund has not arrived"}])
    text: str | None = Field(None, description="the past ticket's cleaned text")
    image: str | None = Field(None, description="URL of the past ticket's screenshot thumbnail")


class Transcript(BaseModel):
    text: str = Field(description="what the voice note says, cleaned like a message; empty when it has no speech")
    language: str | None = Field(None, description="detected (or configured) language", examples=["en"])
    speech_seconds: float | None = Field(None, description="seconds of speech found by voice activity detection")
    seconds: float | None = Field(None, description="the whole note's length")
    no_words: str | None = Field(None, description="why there are no words (e.g. no speech found), when text is empty")


TRANSCRIPT = Field(None, description="the uploaded voice note's transcript (null: no note, or it could not be read)")
SCREEN_TEXT = Field(None, description="the uploaded screenshot's text, lines joined by newlines (empty: no text on it; "
                    "null: no screenshot, or it could not be read)")


class Prediction(BaseModel):
    predicted: str
    probabilities: dict[str, float]
    missing_modalities: list[str]
    errors: list[ModalityError]
    transcript: Transcript | None = TRANSCRIPT
    screen_text: str | None = SCREEN_TEXT
    similar: list[Neighbour]
    similar_error: str | None = Field(None, description="why no similar tickets could be searched (e.g. nothing indexed)")
    timings_ms: dict[str, float] = Field(description="ms per step: upload, each modality (speech: transcribe + embed, "
                                         "screen: OCR + embed), model, search, total")


class SearchResults(BaseModel):
    results: list[Neighbour]
    missing_modalities: list[str]
    errors: list[ModalityError]
    transcript: Transcript | None = TRANSCRIPT
    screen_text: str | None = SCREEN_TEXT
    timings_ms: dict[str, float]


class ItemInfo(BaseModel):
    id: str
    split: str
    label: str
    modalities: list[str]
    meta: dict[str, str]
    text: str | None
    words: dict[str, str] = Field({}, description=WORDS)
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
