"""A running ``mmp serve`` follows what batch runs add: a real server on a served manifest folder; another
run adds a manifest with new tickets and computes their features; within the refresh period the service
finds and knows them, while a client sending requests the whole time sees no error. A refresh that fails
(a manifest with errors, a corrupt index) keeps serving the previous index and is reported and counted."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from dummies import make_items, run, write_manifest
from serve_setup import ROOT, served_model

from serving.launch import launch


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return served_model(tmp_path_factory)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def _found(client, query: str) -> set[str]:
    r = client.post("/v1/search", files={"text": (None, query), "k": (None, "100"), "modality": (None, "text")})
    r.raise_for_status()
    return {hit["id"] for hit in r.json()["results"]}


def test_serve_follows_batch_runs_under_traffic(served, tmp_path):
    import os

    folder = tmp_path / "tickets"
    folder.mkdir()
    write_manifest(folder / "day1.csv", make_items(folder, 0, 9))
    workdir = tmp_path / "w"
    run(folder, workdir, "--set", served.bert)
    args = ["--model", str(served.model), "-w", str(workdir), "-q", "-m", str(folder), "--set", "serve.refresh_seconds=1"]
    proc, url = launch(args, cwd=ROOT, env={"PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    statuses, stop = [], threading.Event()

    def traffic():
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                for path in ("/readyz", "/v1/items/item000"):
                    statuses.append(c.get(path).status_code)
                statuses.append(c.post("/v1/search", files={"text": (None, "message number 3"), "k": (None, "3")}).status_code)

    client = httpx.Client(base_url=url, timeout=30)
    sender = threading.Thread(target=traffic)
    try:
        assert _found(client, "message number 10") == {f"item{i:03d}" for i in range(9)}
        assert client.get("/v1/items/item010").status_code == 404
        sender.start()
        # tonight's batch run, in another process's way: a new manifest file and its features
        write_manifest(folder / "day2.csv", make_items(folder, 9, 4))
        run(folder, workdir, "--set", served.bert)
        new = {f"item{i:03d}" for i in range(9, 13)}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not new <= _found(client, "message number 10"):
            time.sleep(0.2)
        assert new <= _found(client, "message number 10"), "new tickets not served within 30 s"
        info = client.get("/v1/items/item011")
        assert info.status_code == 200 and info.json()["text"] == "message number 11 & bold", info.text
        metrics = client.get("/metrics").text
        assert _metric(metrics, "mmp_refreshes_total") >= 1 and _metric(metrics, "mmp_served_items") == 13
        assert _metric(metrics, 'mmp_indexed_vectors{space="text"}') == 13
        assert _metric(metrics, "mmp_refresh_last_timestamp_seconds") > 0

        # a manifest with errors: the refresh fails, is reported and counted; the old index keeps serving
        (folder / "day3.csv").write_text("name,text\nx,no id column here\n")
        r = client.post("/v1/admin/refresh")
        assert r.status_code == 500 and "ManifestError" in r.json()["error"] and "day3.csv" in r.json()["error"], r.text
        assert _found(client, "message number 10") == {f"item{i:03d}" for i in range(13)}
        assert client.get("/readyz").status_code == 200
        failures = _metric(client.get("/metrics").text, "mmp_refresh_failures_total")
        assert failures >= 1
        (folder / "day3.csv").unlink()

        # a corrupt index: the same
        index_db = workdir / "index" / "index.sqlite"
        saved = index_db.read_bytes()
        index_db.write_bytes(b"this is not a database" * 100)
        r = client.post("/v1/admin/refresh")
        assert r.status_code == 500 and "DatabaseError" in r.json()["error"], r.text
        assert _found(client, "message number 10") == {f"item{i:03d}" for i in range(13)}
        assert _metric(client.get("/metrics").text, "mmp_refresh_failures_total") > failures
        index_db.write_bytes(saved)
        r = client.post("/v1/admin/refresh")
        assert r.status_code == 200 and r.json()["refreshed"] and r.json()["items"] == 13, r.text
    finally:
        stop.set()
        if sender.is_alive():
            sender.join(60)
        client.close()
        proc.terminate()
        proc.wait(30)
    assert statuses and all(s == 200 for s in statuses), sorted(set(statuses))
    assert len(statuses) > 30  # traffic ran the whole time


def test_sighup_refreshes_now(served, tmp_path):
    import os
    import signal

    folder = tmp_path / "tickets"
    folder.mkdir()
    write_manifest(folder / "a.csv", make_items(folder, 0, 3))
    workdir = tmp_path / "w"
    run(folder, workdir, "--set", served.bert)
    args = ["--model", str(served.model), "-w", str(workdir), "-q", "-m", str(folder), "--set", "serve.refresh_seconds=0"]
    proc, url = launch(args, cwd=ROOT, env={"PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            write_manifest(folder / "b.csv", make_items(folder, 3, 2))
            run(folder, workdir, "--set", served.bert)
            time.sleep(1.5)
            assert client.get("/v1/items/item004").status_code == 404  # refresh_seconds = 0: no timer
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and client.get("/v1/items/item004").status_code != 200:
                time.sleep(0.2)
            assert client.get("/v1/items/item004").status_code == 200
            assert client.get("/readyz").json()["items"] == 5
    finally:
        proc.terminate()
        proc.wait(30)
