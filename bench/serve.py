"""make bench, serving: a real ``mmp serve`` (uvicorn on 127.0.0.1) with a model trained on generated
demo data with the default config (MiniLM, ImageNet EfficientNet-Lite0 at 224 px, MFCC). Text +
screenshot + voice-note tickets are sent one at a time, then from 8 concurrent clients; the ratio of requests/s is the gain from dynamic batching
(goal >= 2x). The same 8 clients against a server with ``serve.max_batch_size = 1`` show how much of it
is batching. p50/p99 latencies go into bench.json's ``serve`` section. ``python -m bench.serve`` runs
this part alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
CLIENTS = 8


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


def _serve(manifest: Path, workdir: Path, *settings: str) -> tuple[subprocess.Popen, str]:
    from serving.launch import launch

    args = ["-q", "-m", str(manifest), "-w", str(workdir)]
    for setting in settings:
        args += ["--set", setting]
    return launch(args, cwd=ROOT, env={"PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                                       "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=600, quiet=True)


def _tickets(manifest: Path, n: int) -> list[dict]:
    """Upload bodies of the first n demo tickets that have all three modalities."""
    from pipeline.manifest import load

    out = []
    for item in load(str(manifest)):
        if item.text and item.image and item.audio and len(out) < n:
            base = Path(item.base)
            out.append({"text": (None, item.text), "image": (item.image, (base / item.image).read_bytes()),
                        "audio": (item.audio, (base / item.audio).read_bytes())})
    return out


def _run(url: str, tickets: list[dict], clients: int) -> tuple[float, list[float]]:
    """(requests per second, latencies in ms) for every ticket sent by ``clients`` concurrent clients."""
    import httpx

    def send(body):
        with httpx.Client(base_url=url, timeout=300) as client:
            started = time.perf_counter()
            r = client.post("/v1/predict", files=body)
            if r.status_code != 200:
                raise RuntimeError(f"bench request failed: {r.status_code} {r.text[:200]}")
            return (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(send, tickets))
    return len(tickets) / (time.perf_counter() - started), latencies


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
    figures: dict = {"tickets": len(tickets), "clients": CLIENTS}
    for name, settings in (("batching", ()), ("no_batching", ("serve.max_batch_size=1",))):
        proc, url = _serve(manifest, workdir, *settings)
        try:
            figures[name] = _measure(url, tickets)
        finally:
            stop(proc, timeout=60)
    b, nb = figures["batching"], figures["no_batching"]
    ratio = b[f"rps_{CLIENTS}_clients"] / b["rps_1_client"]
    record(f"serve: {CLIENTS} concurrent clients / 1 client (req/s)", ratio, 2.0,
           f"{b[f'rps_{CLIENTS}_clients']:.1f} vs {b['rps_1_client']:.1f} tickets/s; p50 {b['p50_ms_1_client']:.0f} ms, "
           f"p99 {b['p99_ms_1_client']:.0f} ms one at a time (text+image+audio); without batching "
           f"{nb[f'rps_{CLIENTS}_clients']:.1f} tickets/s at {CLIENTS} clients")
    return figures


if __name__ == "__main__":
    import json

    def show(name, value, goal, detail):
        print(f"  {name:<44} {value:6.2f}x  (goal >= {goal}x)  {detail}", flush=True)

    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(bench_serve(Path(d), show), indent=2))
