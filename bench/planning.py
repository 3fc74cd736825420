"""Planning cost at scale: 50,000 text-file items (a tiny BERT, so models do not dominate the cold run).

Times, as wall-clock and CPU seconds of the real command line in a fresh process (best of 3): a no-op
`mmp features` (everything cached), `mmp status`, `mmp gc` (nothing to remove); against two floors
measured in the same run: `os.stat` on the same 50,000 files (best of 3) and starting Python with the
pipeline and the stages imported. Goals: no-op <= 1.0 s, status <= 1.5 s on a quiet machine; the
ratios to the stat floor say how close planning is to the file system's own cost on this machine.

Run alone with ``python -m bench.planning`` (BENCH_PLAN_ITEMS=N for another size; BENCH_PLAN_DIR=folder
keeps the data and the cache between runs, so only the first pays the cold run); ``make bench`` calls
``run_planning`` and writes the figures into bench/results/bench.json.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ITEMS = int(os.environ.get("BENCH_PLAN_ITEMS", "50000"))
PER_FOLDER = 1000


def _dataset(folder: Path, n: int) -> tuple[Path, list[str]]:
    paths, rows = [], []
    for i in range(n):
        rel = f"text/{i // PER_FOLDER:03d}/{i}.txt"
        path = folder / rel
        if i % PER_FOLDER == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # (a kept folder keeps its files, and their mtimes)
            path.write_text(f"ticket {i}: the app crash on login, cannot pay the refund {i % 97}\n")
        paths.append(str(path))
        rows.append([f"t{i}", ("train", "val", "test")[i % 3], "ab"[i % 2], rel])
    manifest = folder / "m.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "split", "label", "text_path"])
        writer.writerows(rows)
    return manifest, paths


def _wall(args: list[str], repeat: int = 3) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process), each the best of ``repeat`` runs. On a shared machine
    the CPU time says what the command costs when it waits for no other process."""
    import resource

    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        best = min(best, time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best_cpu = min(best_cpu, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return best, best_cpu


def _stat_floor(paths: list[str], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for path in paths:
            os.stat(path)
        best = min(best, time.perf_counter() - started)
    return best


def run_planning(tmp: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import tiny_bert

    data = tmp / "planning"
    manifest, paths = _dataset(data, ITEMS)
    model = tmp / "planning-bert"
    if not (model / "config.json").is_file():
        tiny_bert(model)
    common = ["-m", str(manifest), "-w", str(tmp / "planning-work"), "--set", f'bert.model="{model}"']
    fresh = not (tmp / "planning-work").exists()
    cold, _ = _wall(["-m", "pipeline", "features", "-q", *common], repeat=1)  # (a no-op in a kept folder)
    noop, noop_cpu = _wall(["-m", "pipeline", "features", "-q", *common])
    status, status_cpu = _wall(["-m", "pipeline", "status", *common])
    gc, gc_cpu = _wall(["-m", "pipeline", "gc", *common], repeat=1)
    startup, startup_cpu = _wall(["-c", "import mmpipe_cli.commands, pipeline.runner, stages"])
    floor = _stat_floor(paths)
    figures = {
        "items": ITEMS, "cold_s": round(cold, 2) if fresh else None, "noop_s": round(noop, 3), "noop_cpu_s": round(noop_cpu, 3),
        "status_s": round(status, 3), "status_cpu_s": round(status_cpu, 3), "gc_s": round(gc, 3),
        "gc_cpu_s": round(gc_cpu, 3), "stat_floor_s": round(floor, 3), "python_and_imports_s": round(startup, 3),
        "python_and_imports_cpu_s": round(startup_cpu, 3),
        "noop_over_stat": round(noop / floor, 1), "status_over_stat": round(status / floor, 1),
        "noop_goal_s": 1.0, "status_goal_s": 1.5, "noop_met": noop <= 1.0, "status_met": status <= 1.5,
        "load_average": os.getloadavg()[0], "cpu_count": os.cpu_count(),
    }
    print(f"  {ITEMS} text-file items: cold {f'{cold:.1f} s' if fresh else 'not measured (kept folder)'}; no-op {noop:.2f} s wall / {noop_cpu:.2f} s CPU (goal <= 1.0), "
          f"status {status:.2f} / {status_cpu:.2f} s (goal <= 1.5), gc {gc:.2f} / {gc_cpu:.2f} s; os.stat floor "
          f"{floor:.3f} s (no-op {noop / floor:.1f}x, status {status / floor:.1f}x); Python + imports {startup:.2f} / "
          f"{startup_cpu:.2f} s; load average {figures['load_average']:.1f} on {os.cpu_count()} cores", flush=True)
    return figures


def main() -> int:
    import tempfile

    keep = os.environ.get("BENCH_PLAN_DIR")  # a folder kept between runs: data and cold run made once
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        figures = run_planning(Path(keep))
    else:
        with tempfile.TemporaryDirectory() as d:
            figures = run_planning(Path(d))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "planning.json").write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
