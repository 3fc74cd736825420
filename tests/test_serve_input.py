"""mmp serve with bad input and hostile requests: named errors with the pipeline's types, the right
status codes, uploads only in a private temp folder, no path from a request, the bearer token."""

import io
import os
import stat
import tempfile

import numpy as np
import pytest

from bad_inputs import _wav, bomb_png, tone
from serve_setup import serve_config, served_model, ticket, wait_ready

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return served_model(tmp_path_factory)


@pytest.fixture(scope="module")
def client(served):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    app = create_app(served.model, served.manifests, served.workdir, serve_config(max_upload_mb=1.0), token=TOKEN)
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        wait_ready(c)
        yield c


def png(seed=0) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


WAV = _wav(tone(8000, 0.4), 8000, "PCM_16")
BAD = {
    "ImageDecodeError": {"image": ("s.png", b"\x89PNG\r\n\x1a\n truncated", "image/png")},
    "DecompressionBomb": {"image": ("bomb.png", bomb_png(), "image/png")},
    "EmptyAudio": {"audio": ("v.wav", b"", "audio/wav")},
    "SilentAudio": {"audio": ("v.wav", _wav(np.zeros(4000, np.float32), 8000, "PCM_16"), "audio/wav")},
    "AudioDecodeError": {"audio": ("v.wav", os.urandom(3000), "audio/wav")},
    "TextDecodeError": {"text": (None, "caf\xe9 card charged twice".encode("latin-1"))},
    "EmptyText": {"text": ("t.txt", "\u200b \u200b".encode(), "text/plain")},
}


@pytest.mark.parametrize("error", list(BAD))
def test_each_unusable_modality_is_a_422_naming_the_pipelines_error(client, error):
    r = client.post("/v1/predict", files=BAD[error])
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "NoUsableModality"
    assert [e["error"] for e in body["errors"]] == [error] and error in body["message"]


def test_one_failed_modality_leaves_a_200_with_the_failure_listed(client):
    files = {"text": (None, "my card was charged twice"), **BAD["ImageDecodeError"], "audio": ("v.wav", WAV, "audio/wav")}
    r = client.post("/v1/predict", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["missing_modalities"] == ["image"]
    assert [(e["modality"], e["error"]) for e in body["errors"]] == [("image", "ImageDecodeError")]
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
    metrics = client.get("/metrics").text
    assert 'mmp_errors_total{endpoint="/v1/predict",error="ImageDecodeError"}' in metrics


@pytest.mark.parametrize("name,container,codec,rate,mime", [("memo.m4a", "mp4", "aac", 44100, "audio/mp4"),
                                                           ("note.webm", "webm", "libopus", 48000, "audio/webm"),
                                                           ("clip.mp4", "mp4", "aac", 48000, "video/mp4"),
                                                           ("memo.m4a", "mp4", "aac", 16000, "application/octet-stream")])
def test_phone_and_browser_voice_notes_are_used(client, name, container, codec, rate, mime):
    """An iPhone voice memo (M4A/AAC), a browser recording (WebM/Opus), a phone video's sound track, and an
    M4A as curl sends it (octet-stream) are decoded by the stage's own code (FFmpeg through PyAV): the
    audio modality counts, and equals the same sound sent as WAV to 0.05."""
    from test_clean_audio_ffmpeg import encode

    def ask(audio):
        r = client.post("/v1/predict", files={"text": (None, "voice note attached"), "audio": audio})
        assert r.status_code == 200, r.text
        return r.json()

    body = ask((name, encode(container, codec, rate, 0.6, freq=330.0), mime))
    assert body["missing_modalities"] == ["image"] and not body["errors"]  # no screenshot was sent
    wav = ask(("same.wav", _wav(tone(rate, 0.6), rate, "PCM_16"), "audio/wav"))
    assert max(abs(body["probabilities"][k] - wav["probabilities"][k]) for k in wav["probabilities"]) < 0.05


def test_oversized_wrong_type_and_malformed_requests(client):
    big = {"image": ("big.png", b"\x89PNG" + os.urandom(1_100_000), "image/png")}
    r = client.post("/v1/predict", files=big)
    assert r.status_code == 413 and r.json()["error"] == "UploadTooLarge" and "serve.max_upload_mb" in r.json()["message"]
    r = client.post("/v1/predict", json={"text": "hello"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["message"]
    r = client.post("/v1/predict", files={"image": ("a.png", png(), "text/plain")})
    assert r.status_code == 415 and "'image'" in r.json()["message"]
    r = client.post("/v1/predict", files={"audio": ("a.png", png(), "image/png")})
    assert r.status_code == 415
    r = client.post("/v1/predict", files={"colour": (None, "red")})
    assert r.status_code == 400 and "unknown form field 'colour'" in r.json()["message"]
    r = client.post("/v1/predict", files=[("text", (None, "a")), ("text", (None, "b"))])
    assert r.status_code == 400 and "given twice" in r.json()["message"]
    r = client.post("/v1/predict", files={"k": (None, "3"), "text": (None, "hi")})  # k is a search parameter
    assert r.status_code == 400
    r = client.post("/v1/predict", files={"text": (None, "")})
    assert r.status_code == 422 and r.json()["error"] == "NoUsableModality"
    r = client.post("/v1/predict", content=b"--xyz\r\nContent-Disposition: form-da", headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 400, r.text
    assert client.get("/healthz").status_code == 200  # nothing above took the server down


def test_uploads_live_only_in_a_private_folder_removed_after_the_request(served, client, monkeypatch):
    made, seen = [], {}
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args, **kwargs):
        made.append(real_mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    batcher = client.app.state.service.batchers["image"]
    original = batcher.fn

    def looking(items):
        folder = made[-1]
        seen["mode"], seen["files"] = stat.S_IMODE(os.stat(folder).st_mode), sorted(os.listdir(folder))
        return original(items)

    monkeypatch.setattr(batcher, "fn", looking)
    files = {"text": (None, "hello"), "image": ("../../evil.png", png(), "image/png")}
    assert client.post("/v1/predict", files=files).status_code == 200
    assert seen == {"mode": 0o700, "files": ["image", "text"]}  # fixed names: the client's file name is never used
    assert made and not any(os.path.exists(d) for d in made)
    assert client.post("/v1/predict", files=BAD["ImageDecodeError"]).status_code == 422
    assert not any(os.path.exists(d) for d in made)  # removed after a failed request too


@pytest.mark.parametrize("path", ["/v1/items/..%2F..%2Fm.csv", "/v1/items/%2Fetc%2Fpasswd", "/v1/items/..%2F..",
                                  "/v1/items/%2Fetc%2Fpasswd/image", "/v1/items/..%2Fimg%2F0.png/image",
                                  "/v1/items/item001/..%2F..%2Fm.csv", "/v1/items/img%2F0.png/image"])
def test_request_paths_never_name_a_server_file(client, path):
    r = client.get(path)
    assert r.status_code == 404 and r.json()["error"] == "NotFound"


def test_a_manifest_path_escaping_the_data_root_is_not_served(client):
    r = client.get("/v1/items/escape/image")  # its manifest row names ../secret.png
    assert r.status_code == 404 and "PathEscapesRoot" in r.json()["message"]


def test_bearer_token_guards_everything_but_healthz_and_the_page(served, client):
    from fastapi.testclient import TestClient

    bare = TestClient(client.app)  # same app, no Authorization header
    assert bare.get("/healthz").status_code == 200
    for path in ("/", "/static/app.js"):  # the page holds no data: it shows its sign-in form
        assert bare.get(path).status_code == 200, path
    assert bare.get("/v1/session").json() == {"needed": True, "signed_in": False}
    for method, path in [("get", "/readyz"), ("get", "/metrics"), ("get", "/docs"), ("get", "/openapi.json"),
                         ("get", "/v1/items/item001"), ("get", "/v1/items/item001/image"), ("post", "/v1/predict"),
                         ("post", "/v1/search"), ("post", "/v1/admin/refresh"), ("delete", "/v1/session"),
                         ("get", "/no/such/page")]:
        r = getattr(bare, method)(path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        wrong = getattr(bare, method)(path, headers={"Authorization": "Bearer s3cret-tokeN"})
        assert wrong.status_code == 401, path
    assert bare.get("/readyz", headers={"Authorization": "Basic s3cret-token"}).status_code == 401
    assert client.get("/readyz").status_code == 200 and client.get("/v1/items/item001").status_code == 200
    assert client.post("/v1/predict", files=ticket(served, 1)).status_code == 200


def test_page_sign_in_gives_a_session_cookie_beside_the_bearer_header(served, client):
    from fastapi.testclient import TestClient

    browser = TestClient(client.app)  # no Authorization header: what a browser has
    assert browser.post("/v1/session", data={"token": "s3cret-tokeN"}).status_code == 401
    assert "mmp_session" not in browser.cookies
    r = browser.post("/v1/session", data={"token": TOKEN})
    assert r.status_code == 200 and r.json()["signed_in"], r.text
    header = r.headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=strict" in header.replace("Strict", "strict") and "Max-Age=28800" in header
    cookie = browser.cookies["mmp_session"]
    assert TOKEN not in cookie and TOKEN not in r.text
    assert browser.get("/v1/session").json() == {"needed": True, "signed_in": True}
    assert browser.get("/readyz").status_code == 200
    # (the model's batchers live on the started client's loop: the cookie goes through that client, bare)
    def as_browser(cookie_value, **headers):
        return {"Authorization": "", "Cookie": f"mmp_session={cookie_value}", **headers}

    assert client.post("/v1/predict", files=ticket(served, 1), headers=as_browser(cookie)).status_code == 200
    # another site's page posting with this browser's cookie, or signing it in: refused
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        r = client.post("/v1/predict", files=ticket(served, 1), headers=as_browser(cookie, **headers))
        assert r.status_code == 403 and r.json()["error"] == "CrossSite", r.text
        assert browser.post("/v1/session", data={"token": TOKEN}, headers=headers).status_code == 403
    same = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/v1/predict", files=ticket(served, 1), headers=as_browser(cookie, **same)).status_code == 200
    # a tampered cookie: 401
    forged = cookie[:-2] + ("AA" if cookie[-2:] != "AA" else "BB")
    assert client.get("/readyz", headers=as_browser(forged)).status_code == 401
    # sign-out: the cookie goes, and replaying it is refused
    assert browser.delete("/v1/session").json()["signed_in"] is False
    assert browser.get("/readyz").status_code == 401
    assert client.get("/readyz", headers=as_browser(cookie)).status_code == 401
    assert client.get("/readyz").status_code == 200  # the Bearer header still works


def test_an_expired_session_is_refused():
    import time

    from serving.session import Sessions

    sessions = Sessions("t0ken", hours=1 / 3600)  # one second
    cookie = sessions.issue()
    assert sessions.valid(cookie)
    time.sleep(2.2)
    assert not sessions.valid(cookie)
    assert not Sessions("another token", hours=1).valid(Sessions("t0ken", hours=1).issue())  # rotating the token
