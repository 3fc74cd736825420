"""make bench: each figure a ratio against a baseline measured in the same run (not a timed test), plus
the early-cutoff counts on the demo (bench/cutoff.py) and the planning cost at 50,000 items
(bench/planning.py).

Writes bench/results/bench.json and prints a table. Sizes are small enough for a 2-core machine
(a few minutes); BENCH_SCALE=2 doubles them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
RESULTS: list[dict] = []


def record(name: str, value: float, goal: float | None, detail: str) -> None:
    """One ratio (higher is better) against its goal; ``goal = None`` for a figure reported without one."""
    met = None if goal is None else value >= goal
    RESULTS.append({"name": name, "ratio": round(value, 3), "goal": goal, "met": met, "detail": detail})
    target = "(no goal)     " if goal is None else f"(goal >= {goal}x)"
    print(f"  {name:<44} {value:6.2f}x  {target}  {detail}", flush=True)


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def mixed_texts(n: int, seed: int = 0) -> list[str]:
    from .search_data import DEMO_TEMPLATES

    rng = np.random.default_rng(seed)
    pool = DEMO_TEMPLATES
    lengths = rng.choice([1, 1, 1, 2, 2, 3, 5, 8, 12], size=n)  # mostly short tickets, a few long ones
    return [" ".join(pool[int(i)] for i in rng.integers(0, len(pool), k)) for k in lengths]


def bench_mfcc(tmp: Path) -> None:
    import librosa

    from pipeline.demo import _audio
    from stages.clean_audio import CleanAudio, CleanAudioConfig
    from stages.mfcc import Mfcc, MfccConfig

    n = int(160 * SCALE)
    rng = np.random.default_rng(2)
    folder = tmp / "audio"
    folder.mkdir()
    paths = [str(folder / _audio(rng, "low" if i % 2 else "high", folder / f"a{i}")) for i in range(n)]
    clean, mfcc = CleanAudio(CleanAudioConfig()), Mfcc(MfccConfig())
    mfcc.ensure_ready()
    mfcc.process(clean.process([{"path": p} for p in paths[:4]]))  # warm up

    def stage_path():
        for i in range(0, n, 64):
            mfcc.process(clean.process([{"path": p} for p in paths[i : i + 64]]))

    def naive():
        for p in paths:
            y, sr = librosa.load(p, sr=16000, mono=True)
            m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40, n_fft=512, hop_length=160, n_mels=64)
            np.concatenate([m.mean(axis=1), m.std(axis=1)])

    t_stage, t_naive = best_of(stage_path, 2), best_of(naive, 2)
    record("mfcc stage incl. decode / naive librosa loop", t_naive / t_stage, 2.0,
           f"{n / t_stage:.0f} vs {n / t_naive:.0f} clips/s")


def peak_rss(n: int, tmp: Path) -> float:
    data = tmp / f"demo{n}"
    subprocess.run([sys.executable, "-m", "pipeline", "demo-data", "--out", str(data), "--items", str(n)],
                   check=True, cwd=ROOT, capture_output=True)
    code = ("import resource, sys; from mmpipe_cli.commands import main; "
            f"code = main(['features', '-q', '-m', {str(data / 'demo.csv')!r}, '-w', {str(tmp / f'w{n}')!r}]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def bench_memory(tmp: Path) -> None:
    n = int(40 * SCALE)
    small, large = peak_rss(n, tmp), peak_rss(10 * n, tmp)
    # Reported as small/large so that, like the other figures, higher is better: goal 1/1.2.
    record("peak RSS: N items / 10N items", small / large, round(1 / 1.2, 3),
           f"{small:.0f} MB at N={n} vs {large:.0f} MB at 10N (ratio 10N/N = {large / small:.2f}, goal <= 1.2)")


def machine() -> dict:
    """Which machine the figures come from: CPU model, cores, when."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    from stages.cpu import cpu_flags

    flags = sorted({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"} & cpu_flags())
    return {"cpu": model, "cpu_count": os.cpu_count(), "cpu_flags": flags, "date": time.strftime("%Y-%m-%d %H:%M"),
            "host": platform.node()}


def machine_line(where: dict) -> str:
    return (f"machine: {where['cpu']}, {where['cpu_count']} cores, {' '.join(where.get('cpu_flags', [])) or 'no AVX'} "
            f"(host {where['host']}, {where['date']})")


def main() -> int:
    sys.path.insert(0, str(ROOT))
    import stages  # noqa: F401

    from bench import search

    where = machine()
    print("make bench (ratios against baselines measured in this run; higher is better)", flush=True)
    print(machine_line(where), flush=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        from bench.models import bench_bert, bench_cnn
        from bench.peak import sgemm_rates

        sgemm = sgemm_rates()
        peak = max(sgemm.values())
        print("fp32 sgemm 2048^3, GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in sgemm.items()), flush=True)
        models = {"sgemm_gflops": sgemm, "bert": bench_bert(tmp, record, peak, SCALE),
                  "cnn": bench_cnn(tmp, record, peak, SCALE)}
        bench_mfcc(tmp)
        bench_memory(tmp)
        search_figures = search.run(tmp / "search", record)
        from bench import multilingual

        multilingual_figures = multilingual.main()
        from bench.serve import bench_serve

        serve = bench_serve(tmp, record)
        from bench.light import bench_light

        light = bench_light(tmp / "light", record)
        print("early cutoff on the demo (items computed after a change whose cleaned output is identical)", flush=True)
        from bench.cutoff import run_cutoff

        cutoff = run_cutoff(tmp)
        print("planning cost at scale (wall seconds of the real commands, against os.stat on the same files)", flush=True)
        from bench.planning import run_planning

        planning = run_planning(tmp)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps({"scale": SCALE, **where, "results": RESULTS, "models": models,
                                               "search": search_figures,
                                               "multilingual": multilingual_figures,
                                               "serve": serve, "light": light, "cutoff": cutoff, "planning": planning}, indent=2))
    print(f"wrote {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
