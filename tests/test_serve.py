"""mmp serve through TestClient: every endpoint, the same probabilities as mmp predict, dynamic batching,
the bounded queue, and the loading / ready life cycle."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from dummies import make_items, write_manifest
from serve_setup import serve_config, served_model, ticket, wait_ready


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return served_model(tmp_path_factory)


@pytest.fixture(scope="module")
def client(served):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    app = create_app(served.model, served.manifests, served.workdir, serve_config(max_wait_ms=5.0))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def test_predict_gives_mmp_predicts_probabilities(served, client, tmp_path):
    import pandas as pd

    from mmpipe_cli.commands import main

    rows = make_items(served.root, 100, 3)
    rows[2].update(image="", audio="")  # text only: the absent modalities are zeros + mask 0 in both
    new = write_manifest(served.root / "new.csv", rows)
    out = tmp_path / "pred.csv"
    assert main(["predict", "-m", str(new), "-w", str(served.workdir), "--model", str(served.model), "--out", str(out), "-q"]) == 0
    expected = pd.read_csv(out, keep_default_na=False).set_index("id")
    for n, row in zip((100, 101, 102), rows):
        files = ticket(served, n, row["text"])
        if n == 102:
            del files["image"], files["audio"]
        r = client.post("/v1/predict", files=files)
        assert r.status_code == 200, r.text
        body = r.json()
        want = expected.loc[row["id"]]
        assert body["predicted"] == want["predicted"]
        for label, p in body["probabilities"].items():
            assert abs(p - float(want[f"p_{label}"])) <= 1e-5, (row["id"], label, p, want[f"p_{label}"])
        assert ",".join(body["missing_modalities"]) == want["missing_modalities"]
        assert body["errors"] == [] and body["similar_error"] is None
        assert set(body["timings_ms"]) >= {"upload", "text", "model", "search", "total"}
    assert body["missing_modalities"] == ["image", "audio"]


def test_similar_tickets_come_with_the_prediction_and_search(served, client):
    body = client.post("/v1/predict", files=ticket(served, 4)).json()
    assert len(body["similar"]) == 5  # serve.similar_k
    top = body["similar"][0]
    assert top["id"] == "item004" and top["label"] == "a" and top["text"] == "message number 4 & bold"
    assert top["image"] == "/v1/items/item004/image"
    scores = [s["score"] for s in body["similar"]]
    assert scores == sorted(scores, reverse=True)

    files = {"k": (None, "3"), "modality": (None, "image"), **ticket(served, 7)}
    r = client.post("/v1/search", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 3 and results[0]["id"] == "item007" and "image" in results[0]["modalities"]
    r = client.post("/v1/search", files={"text": (None, "cannot login after the payment"), "k": (None, "2")})
    assert r.status_code == 200 and r.json()["missing_modalities"] == ["image", "audio"]
    results = r.json()["results"]  # the tiny BERT reads every training text alike: ties come together
    assert len(results) == 2 or len(results) > 2 and len({hit["score"] for hit in results}) == 1


def test_a_failing_search_leaves_the_prediction_and_says_why(served, client, monkeypatch):
    from pipeline.errors import SearchError

    def nothing_indexed(*args, **kwargs):
        raise SearchError("no items with text features are indexed; run mmp features")

    monkeypatch.setattr(client.app.state.service.searcher, "search", nothing_indexed)
    r = client.post("/v1/predict", files=ticket(served, 2))
    assert r.status_code == 200 and r.json()["predicted"] in ("a", "b") and r.json()["similar"] == []
    assert "no items with text features are indexed" in r.json()["similar_error"]
    r = client.post("/v1/search", files=ticket(served, 2))
    assert r.status_code == 422 and "no items with text features" in r.json()["message"]


@pytest.mark.parametrize("params, message", [
    ({"k": "0"}, "k must be within 1..100"),
    ({"k": "ten"}, "k must be an integer"),
    ({"modality": "video"}, "modality must be 'all' or one of"),
    ({"modality": "audio"}, "the request has no usable audio"),
])
def test_search_parameters_are_checked(client, params, message):
    files = {"text": (None, "refund please")} | {k: (None, v) for k, v in params.items()}
    r = client.post("/v1/search", files=files)
    assert r.status_code == 422 and r.json()["error"] == "InvalidParameter" and message in r.json()["message"]


def test_items_and_thumbnails_of_the_served_manifests(served, client):
    from PIL import Image
    import io

    info = client.get("/v1/items/item003").json()
    assert info == {"id": "item003", "split": "train", "label": "b", "modalities": ["text", "image", "audio"],
                    "meta": {}, "text": "message number 3 & bold", "words": {"text": "message number 3 & bold"},
                    "image": "/v1/items/item003/image"}
    r = client.get("/v1/items/item003/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (160, 160)  # serve.thumbnail_px
    assert client.get("/v1/items/nope").status_code == 404
    r = client.get("/v1/items/corrupt/image")
    assert r.status_code == 404 and "ImageDecodeError" in r.json()["message"]


def test_health_metrics_docs_and_page(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["labels"] == ["a", "b"] and ready["items"] == 14
    text = client.get("/metrics").text
    assert 'mmp_requests_total{endpoint="/v1/predict",status="200"}' in text
    assert 'mmp_batch_size_bucket{le="1.0",model="image"}' in text
    assert 'mmp_errors_total{endpoint="/v1/search",error="InvalidParameter"}' in text
    assert "mmp_request_seconds_bucket" in text and "mmp_ready 1.0" in text
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    assert "swagger" in client.get("/docs").text.lower()
    page = client.get("/")
    assert page.status_code == 200 and 'id="ticket"' in page.text
    assert client.get("/static/app.js").status_code == 200


def _batch_sizes(client, model: str) -> tuple[float, float]:
    """(model calls, requests) the batcher has served so far, from /metrics."""
    values = {}
    for line in client.get("/metrics").text.splitlines():
        for name in ("count", "sum"):
            if line.startswith(f'mmp_batch_size_{name}{{model="{model}"}}'):
                values[name] = float(line.split()[-1])
    return values["count"], values["sum"]


def test_concurrent_requests_are_batched_with_the_same_answers(served, client):
    service = client.app.state.service
    alone = [client.post("/v1/predict", files=ticket(served, n)).json()["probabilities"] for n in range(6)]
    calls, requests = _batch_sizes(client, "image")
    for batcher in service.batchers.values():
        batcher.max_wait = 0.5
    try:
        with ThreadPoolExecutor(6) as pool:
            together = list(pool.map(lambda n: client.post("/v1/predict", files=ticket(served, n)).json()["probabilities"], range(6)))
    finally:
        for batcher in service.batchers.values():
            batcher.max_wait = 0.005
    calls_after, requests_after = _batch_sizes(client, "image")
    assert requests_after - requests == 6 and calls_after - calls < 6  # grouped into fewer model calls
    for a, b in zip(alone, together):
        np.testing.assert_allclose(list(a.values()), list(b.values()), atol=1e-5)


def test_a_full_queue_answers_503_with_retry_after(served, client):
    service = client.app.state.service
    gate = threading.Event()
    batcher = service.batchers["text"]
    original = batcher.fn
    batcher.fn = lambda items: (gate.wait(30), original(items))[1]
    service.serve.max_queue = 1
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.post, "/v1/predict", files={"text": (None, "first")})
            while service.in_flight < 1:
                time.sleep(0.01)
            second = client.post("/v1/predict", files={"text": (None, "second")})
            gate.set()
            assert first.result().status_code == 200
    finally:
        gate.set()
        batcher.fn, service.serve.max_queue = original, 64
    assert second.status_code == 503 and second.headers["retry-after"] == "1"
    assert second.json()["error"] == "Overloaded"


def test_ready_only_once_loaded_and_load_failures_reported(served, monkeypatch):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.service import TicketService

    gate = threading.Event()
    real_load = TicketService.load

    def slow_load(self):
        gate.wait(30)
        real_load(self)

    monkeypatch.setattr(TicketService, "load", slow_load)
    app = create_app(served.model.parent / "missing", served.manifests, served.workdir, serve_config())
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200
        loading = c.get("/readyz")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        r = c.post("/v1/predict", files={"text": (None, "hello")})
        assert r.status_code == 503 and r.json()["error"] == "NotReady" and "retry-after" in r.headers
        gate.set()
        while c.get("/readyz").json()["status"] == "loading":
            time.sleep(0.05)
        failed = c.get("/readyz")
        assert failed.status_code == 503 and "holds no model.keras" in failed.json()["error"]
        assert c.get("/healthz").status_code == 200


def test_batcher_groups_and_refuses_beyond_its_queue():
    import asyncio

    from serving.batching import DynamicBatcher
    from serving.errors import Overloaded

    gate, seen = threading.Event(), []

    def model(values):
        gate.wait(10)
        seen.append(len(values))
        return [v * 10 for v in values]

    async def scenario():
        batcher = DynamicBatcher("m", model, max_batch_size=3, max_wait_ms=50, max_queue=4)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.2)  # the first batch (one value) is now computing, its queue empty
        waiting = [asyncio.ensure_future(batcher.submit(v)) for v in range(1, 5)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="queue is full"):
            await batcher.submit(99)
        gate.set()
        results = await asyncio.gather(first, *waiting)
        await batcher.stop()
        return results

    assert asyncio.run(scenario()) == [0, 10, 20, 30, 40]
    assert seen == [1, 3, 1]


def test_launch_names_a_server_that_exits_before_it_is_ready(tmp_path):
    """serving.launch (what the browser/load tests and the serve bench start servers with): a server that
    cannot start is an error naming its exit status, not a wait until the timeout."""
    import time
    from pathlib import Path

    from serving.launch import launch

    REPO = Path(__file__).resolve().parent.parent
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"mmp serve exited with 2 before it was ready"):
        launch(["--model", str(tmp_path / "no-such-model"), "-w", str(tmp_path / "w"), "-m", str(tmp_path / "none.csv")],
               cwd=REPO, env={"PYTHONPATH": str(REPO)}, timeout=120, quiet=True)
    assert time.monotonic() - started < 60
