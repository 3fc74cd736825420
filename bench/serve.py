"""make bench, serving: a real ``mmp serve`` (uvicorn on 127.0.0.1) with a model trained on generated
demo data with the default config (MiniLM, ImageNet EfficientNet-Lite0 at 224 px, MFCC). Text +
screenshot + voice-note tickets are sent one at a time, then from 8 concurrent clients; the ratio of requests/s is the gain from dynamic batching
(goal >= 2x). The same 8 clients against a server with ``serve.max_batch_size = 1`` show how much of it
is batching. p50/p99 latencies go into bench.json's ``serve`` section. ``python -m bench.serve`` runs
this part alone.

Also measured, returned and printed (latencies have no goal, so nothing is recorded for them):
``ready_s`` — seconds from launching ``mmp serve`` to its first 200 from ``/readyz`` (``serving.launch``
polls every 0.3 s), per server; ``one_ticket_p50_ms`` — one request at a time, a full ticket (text +
screenshot + voice note) and a text-only one; ``multilingual`` — the text-only p50 with the multilingual
stages on (the default) and the two text encoders' own p50 inside those requests (the response's
``timings_ms``: ``text`` = bert, ``text_ml`` = multilingual, run side by side). "Off" is not measured:
no setting turns the multilingual stages off (``stages.FEATURES`` always runs them, and the service
encodes ``text_ml`` for search whatever the model reads: ``serving/service.py`` ``WORD_MODALITIES``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
CLIENTS = 8
NO_OFF_SWITCH = ("no setting turns the multilingual stages off: stages.FEATURES always runs them and the service "
                 "encodes text_ml for search whatever the model reads (serving/service.py WORD_MODALITIES)")


def _mmp(*args: str, **kwargs) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "pipeline", *args]
    if kwargs.pop("background", False):
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, **kwargs)


def _train(tmp: Path, n_items: int) -> tuple[Path, Path]:
    _mmp("demo-data", "--out", str(tmp / "demo"), "--items", str(n_items))
    manifest = tmp / "demo" / "demo.csv"
    _mmp("train", "-q", "-m", str(manifest), "-w", str(tmp / "w"),
         "--set", "train.ablation=false", "--set", "train.epochs=20")
    return manifest, tmp / "w"


def _serve(manifest: Path, workdir: Path, *settings: str) -> tuple[subprocess.Popen, str, float]:
    """(process, URL, seconds from launch to the first 200 from /readyz)."""
    from serving.launch import launch

    args = ["-q", "-m", str(manifest), "-w", str(workdir)]
    for setting in settings:
        args += ["--set", setting]
    started = time.perf_counter()
    proc, url = launch(args, cwd=ROOT, env={"PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                                            "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=600, quiet=True)
    return proc, url, time.perf_counter() - started


def _tickets(manifest: Path, n: int, text_only: bool = False) -> list[dict]:
    """Upload bodies of the first n demo tickets that have all three modalities (only their text with
    ``text_only``)."""
    from pipeline.manifest import load

    out = []
    for item in load(str(manifest)):
        if item.text and item.image and item.audio and len(out) < n:
            base = Path(item.base)
            body = {"text": (None, item.text)}
            if not text_only:
                body.update(image=(item.image, (base / item.image).read_bytes()),
                            audio=(item.audio, (base / item.audio).read_bytes()))
            out.append(body)
    return out


def _run(url: str, tickets: list[dict], clients: int, timings: list | None = None) -> tuple[float, list[float]]:
    """(requests per second, latencies in ms) for every ticket sent by ``clients`` concurrent clients; each
    answer's ``timings_ms`` appended to ``timings`` when given."""
    import httpx

    def send(body):
        with httpx.Client(base_url=url, timeout=300) as client:
            started = time.perf_counter()
            r = client.post("/v1/predict", files=body)
            if r.status_code != 200:
                raise RuntimeError(f"bench request failed: {r.status_code} {r.text[:200]}")
            if timings is not None:
                timings.append(r.json()["timings_ms"])
            return (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(send, tickets))
    return len(tickets) / (time.perf_counter() - started), latencies


def _p50(values: list[float]) -> float:
    return round(float(np.percentile(values, 50)), 1)


def _text_only(url: str, tickets: list[dict]) -> dict:
    """One text-only request at a time: its p50/p99, and the p50 of each text encoder inside it."""
    _run(url, tickets[:4], 1)  # warm-up
    timings: list[dict] = []
    _, ms = _run(url, tickets, 1, timings)
    return {"p50_ms_1_client": _p50(ms), "p99_ms_1_client": round(float(np.percentile(ms, 99)), 1),
            "bert_p50_ms": _p50([t["text"] for t in timings]),
            "multilingual_p50_ms": _p50([t["text_ml"] for t in timings if "text_ml" in t])}


def _measure(url: str, tickets: list[dict]) -> dict:
    _run(url, tickets[:CLIENTS * 2], CLIENTS)  # warm-up: every batch size the first rounds meet
    one_rate, one_ms = _run(url, tickets, 1)
    many_rate, many_ms = _run(url, tickets, CLIENTS)
    return {"rps_1_client": round(one_rate, 2), f"rps_{CLIENTS}_clients": round(many_rate, 2),
            "p50_ms_1_client": round(float(np.percentile(one_ms, 50)), 1),
            "p99_ms_1_client": round(float(np.percentile(one_ms, 99)), 1),
            f"p50_ms_{CLIENTS}_clients": round(float(np.percentile(many_ms, 50)), 1),
            f"p99_ms_{CLIENTS}_clients": round(float(np.percentile(many_ms, 99)), 1)}


def bench_serve(tmp: Path, record) -> dict:
    from serving.launch import stop

    manifest, workdir = _train(tmp, int(120 * SCALE))
    tickets = _tickets(manifest, int(64 * SCALE))
    texts = _tickets(manifest, int(64 * SCALE), text_only=True)
    figures: dict = {"tickets": len(tickets), "clients": CLIENTS, "ready_s": {}}
    for name, settings in (("batching", ()), ("no_batching", ("serve.max_batch_size=1",))):
        proc, url, ready = _serve(manifest, workdir, *settings)
        figures["ready_s"][name] = round(ready, 2)
        try:
            figures[name] = _measure(url, tickets)
            if name == "batching":
                figures["text_only"] = _text_only(url, texts)
        finally:
            stop(proc, timeout=60)
    b, nb, t = figures["batching"], figures["no_batching"], figures["text_only"]
    figures["one_ticket_p50_ms"] = {"full": b["p50_ms_1_client"], "text_only": t["p50_ms_1_client"]}
    figures["multilingual"] = {"text_only_p50_ms_on": t["p50_ms_1_client"], "text_only_p50_ms_off": None,
                               "off": NO_OFF_SWITCH, "bert_p50_ms_in_request": t["bert_p50_ms"],
                               "multilingual_p50_ms_in_request": t["multilingual_p50_ms"]}
    print(f"  serve: ready {figures['ready_s']['batching']:.1f} s after launch (no batching: "
          f"{figures['ready_s']['no_batching']:.1f} s); one ticket at a time p50 {b['p50_ms_1_client']:.0f} ms "
          f"(text+image+audio), {t['p50_ms_1_client']:.0f} ms (text only: bert {t['bert_p50_ms']:.0f} ms and "
          f"multilingual {t['multilingual_p50_ms']:.0f} ms side by side inside it); multilingual off: not "
          f"measured ({NO_OFF_SWITCH})", flush=True)
    ratio = b[f"rps_{CLIENTS}_clients"] / b["rps_1_client"]
    record(f"serve: {CLIENTS} concurrent clients / 1 client (req/s)", ratio, 2.0,
           f"{b[f'rps_{CLIENTS}_clients']:.1f} vs {b['rps_1_client']:.1f} tickets/s; p50 {b['p50_ms_1_client']:.0f} ms, "
           f"p99 {b['p99_ms_1_client']:.0f} ms one at a time (text+image+audio); without batching "
           f"{nb[f'rps_{CLIENTS}_clients']:.1f} tickets/s at {CLIENTS} clients")
    return figures


if __name__ == "__main__":
    from bench.alone import run_alone

    run_alone(bench_serve)
