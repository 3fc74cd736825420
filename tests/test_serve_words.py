"""The words in the service and in `mmp predict`: an uploaded voice note's transcript and a screenshot's
text in the answers (with their timings), similar tickets found by their words and saying where they
matched, a note without speech an empty transcript (not an error), the page's places for them, and
`mmp predict`'s transcript / screen_text columns. The words data is tests/test_search_words.py's."""

import pytest

from serve_setup import serve_config, served_model, wait_ready
from test_search_words import words_data


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return served_model(tmp_path_factory)  # the tiny trained model (tones and noise images: no words blocks)


@pytest.fixture(scope="module")
def data(served, tmp_path_factory):  # features with the served model's BERT (its path is in the stages' keys)
    return words_data(tmp_path_factory.mktemp("serve-words"), "--set", served.bert)


@pytest.fixture(scope="module")
def client(served, data):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    app = create_app(served.model, [str(data["manifest"])], data["work"], serve_config(max_wait_ms=5.0))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def upload(data, name: str, mime: str):
    folder = "aud" if mime.startswith("audio") else "img"
    field = "audio" if mime.startswith("audio") else "image"
    return {field: (name, (data["root"] / folder / name).read_bytes(), mime)}


def test_a_voice_note_is_transcribed_and_finds_tickets_by_what_it_says(client, data):
    r = client.post("/v1/predict", files={"text": (None, "see attached"), **upload(data, "voice.ogg", "audio/ogg")})
    assert r.status_code == 200, r.text
    body = r.json()
    t = body["transcript"]
    assert t["text"] == data["said"] and t["language"] == "en" and t["no_words"] is None  # as the batch run read it
    assert 1.0 < t["speech_seconds"] <= t["seconds"]
    assert body["screen_text"] is None and body["errors"] == []  # no screenshot sent; nothing failed
    assert {"speech", "audio", "text", "model", "search", "total"} <= set(body["timings_ms"])
    similar = {s["id"]: s for s in body["similar"]}
    assert similar["voice"]["matched"] == "speech" and similar["voice"]["words"] == {"said": data["said"]}
    assert similar["twin"]["matched"] == "text" and similar["twin"]["query_words"] == "speech"
    # by the words alone, the typed ticket that says the same comes first
    r = client.post("/v1/search", files={"modality": (None, "text"), "k": (None, "1"), **upload(data, "voice.ogg", "audio/ogg")})
    assert r.status_code == 200, r.text
    (top,) = r.json()["results"]
    assert (top["id"], top["matched"], top["query_words"]) == ("twin", "text", "speech") and top["score"] > 0.999
    assert r.json()["transcript"]["text"] == data["said"] and "speech" in r.json()["timings_ms"]


def test_a_screenshot_is_read_and_finds_tickets_by_what_it_shows(client, data):
    r = client.post("/v1/predict", files=upload(data, "shot.png", "image/png"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["screen_text"] == data["shown"] and body["transcript"] is None and body["errors"] == []
    assert "screen" in body["timings_ms"]
    shot = {s["id"]: s for s in body["similar"]}["shot"]
    assert shot["matched"] == "screen" and shot["words"] == {"on_screen": data["shown"]}
    assert shot["image"] == "/v1/items/shot/image"
    r = client.post("/v1/search", files={"text": (None, data["shown"]), "modality": (None, "screen")})
    assert [hit["id"] for hit in r.json()["results"]] == ["shot"]
    r = client.post("/v1/search", files={"text": (None, data["said"]), "modality": (None, "words"), "k": (None, "2")})
    assert {hit["id"] for hit in r.json()["results"]} == {"voice", "twin"}


def test_no_speech_and_no_text_are_empty_words_not_errors(client, data):
    r = client.post("/v1/predict", files={**upload(data, "tone.wav", "audio/wav"), **upload(data, "food.png", "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["errors"] == [] and body["missing_modalities"] == ["text", "text_ml"]
    assert body["transcript"]["text"] == "" and body["transcript"]["language"] is None
    assert "speech" in body["transcript"]["no_words"]  # why: e.g. "no speech in the voice note (0.4 s; ...)"
    assert body["screen_text"] == ""
    # a request whose only words channel is empty cannot be searched by words: a clear 422, not a crash
    r = client.post("/v1/search", files={"modality": (None, "speech"), **upload(data, "tone.wav", "audio/wav")})
    assert r.status_code == 422 and "has no usable words" in r.json()["message"]
    assert 'error="NoWords"' not in client.get("/metrics").text


def test_a_broken_voice_note_is_one_error_not_two(client):
    r = client.post("/v1/predict", files={"text": (None, "see attached"), "audio": ("v.wav", b"", "audio/wav")})
    assert r.status_code == 200, r.text
    assert [(e["modality"], e["error"]) for e in r.json()["errors"]] == [("audio", "EmptyAudio")]
    assert r.json()["transcript"] is None


def test_items_carry_their_words_and_the_page_shows_them(client, data):
    info = client.get("/v1/items/voice").json()
    assert info["modalities"] == ["audio"] and info["text"] is None and info["words"] == {"said": data["said"]}
    page = client.get("/").text
    assert 'id="transcript"' in page and 'id="screen-text"' in page
    script = client.get("/static/app.js").text
    assert "on screen: " in script and "said: " in script and "textContent" in script


def test_predict_writes_the_transcript_and_the_screen_text(served, data, tmp_path):
    import pandas as pd

    from dummies import run

    out = tmp_path / "pred.csv"
    run(data["manifest"], data["work"], "--model", str(served.model), "--out", str(out), command="predict")
    got = pd.read_csv(out, keep_default_na=False).set_index("id")
    assert got.loc["voice", "transcript"] == data["said"] and got.loc["voice", "screen_text"] == ""
    assert got.loc["shot", "screen_text"] == data["shown"] and got.loc["shot", "transcript"] == ""
    assert got.loc["tone", "transcript"] == "" and got.loc["tone", "error"] == ""  # no speech: no words, no error
    assert list(got.columns[-4:]) == ["transcript", "screen_text", "error", "message"]
