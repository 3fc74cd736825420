"""A bounded load test against a real ``mmp serve`` (uvicorn on 127.0.0.1): 300 requests from 16 concurrent
clients, good and bad uploads mixed, then it stops. Every request is answered, no 5xx but 503 (the
bounded queue), and the server's RSS after the run stays within 1.2x of its RSS after warm-up."""

import os
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from bad_inputs import _wav, bomb_png, tone
from serve_setup import served_model, start_server, ticket
from serving.launch import stop

pytestmark = pytest.mark.load
REQUESTS, CLIENTS = 300, 16


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def requests_mix(served):
    """(name, method, path, files) of each kind of request, good and bad."""
    silent = _wav(tone(8000, 0.5) * 0, 8000, "PCM_16")
    kinds = [("ticket", "post", "/v1/predict", lambda n: ticket(served, n % 12))] * 8 + [
        ("text only", "post", "/v1/predict", lambda n: {"text": (None, f"card charged twice {n}")}),
        ("search", "post", "/v1/search", lambda n: {**ticket(served, n % 12), "k": (None, "3")}),
        ("broken image", "post", "/v1/predict", lambda n: {"image": ("x.png", b"\x89PNG broken", "image/png")}),
        ("bomb", "post", "/v1/predict", lambda n: {"image": ("b.png", bomb_png(), "image/png")}),
        ("silent audio", "post", "/v1/predict", lambda n: {"audio": ("s.wav", silent, "audio/wav")}),
        ("too big", "post", "/v1/predict", lambda n: {"image": ("big.png", os.urandom(1_200_000), "image/png")}),
        ("wrong type", "post", "/v1/predict", lambda n: {"image": ("x.png", b"abc", "application/pdf")}),
        ("item", "get", "/v1/items/item003", None),
        ("thumbnail", "get", "/v1/items/item005/image", None),
        ("no such item", "get", "/v1/items/..%2F..%2Fetc%2Fpasswd", None),
    ]
    return kinds


def test_bounded_load_mixed_good_and_bad(tmp_path_factory):
    import httpx

    served = served_model(tmp_path_factory)
    proc, url = start_server(served, "serve.max_upload_mb=1.0", "serve.max_queue=12", "serve.max_wait_ms=10")
    try:
        kinds = requests_mix(served)
        rng = random.Random(0)
        plan = [rng.choice(kinds) for _ in range(REQUESTS)]

        def call(n_kind):
            n, (name, method, path, files) = n_kind
            with httpx.Client(base_url=url, timeout=120) as client:
                r = client.post(path, files=files(n)) if method == "post" else client.get(path)
                return name, r.status_code, r.headers.get("retry-after")

        with ThreadPoolExecutor(CLIENTS) as pool:  # warm-up: every kind of request a few times
            list(pool.map(call, enumerate(kinds * 3)))
        warm = rss_mb(proc.pid)
        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(call, enumerate(plan)))
        after = rss_mb(proc.pid)
        assert proc.poll() is None, "the server died under load"
    finally:
        stop(proc)
    statuses: dict[str, dict[int, int]] = {}
    for name, status, _ in answers:
        statuses.setdefault(name, {}).setdefault(status, 0)
        statuses[name][status] += 1
    print(f"\nload: {len(answers)} requests from {CLIENTS} clients; by kind and status: {statuses}")
    print(f"load: RSS {warm:.0f} MB after warm-up, {after:.0f} MB after the run (x{after / warm:.3f})")
    assert len(answers) == REQUESTS
    assert not [a for a in answers if a[1] >= 500 and a[1] != 503]
    assert all(retry == "1" for _, status, retry in answers if status == 503)
    expected = {"ticket": 200, "text only": 200, "search": 200, "broken image": 422, "bomb": 422, "silent audio": 422,
                "too big": 413, "wrong type": 415, "item": 200, "thumbnail": 200, "no such item": 404}
    for name, status, _ in answers:
        assert status in (expected[name], 503), (name, status)
    assert sum(1 for a in answers if a[1] == 200) > REQUESTS / 3  # the bounded queue refuses some, not most
    assert after <= 1.2 * warm
