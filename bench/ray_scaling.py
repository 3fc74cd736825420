"""make bench-ray: items/s of the bert and cnn stages, local engine vs Ray with 1 and 2 actors, in one run.

Cleaning stages are computed first (untimed); each engine setting then computes bert and cnn from
scratch in its own work directory. Ray is started once, before timing; actor start-up (model load) is
part of each Ray figure, as it is in real runs. Writes bench/results/ray_scaling.json.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
N = int(float(os.environ.get("BENCH_SCALE", "1")) * 128)


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from bench.run import machine, machine_line
    from pipeline.cli import main as mmp

    where = machine()
    print(machine_line(where), flush=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        mmp(["demo-data", "--out", str(tmp / "data"), "--items", str(N)])
        manifest = str(tmp / "data" / "demo.csv")
        base = ["-m", manifest, "-q", "--set", 'cnn.weights="none"', "--set", "ray.num_cpus=2"]
        settings = {"local": [], "ray, 1 actor": ["--engine", "ray"],
                    "ray, 2 actors": ["--engine", "ray", "--set", "ray.stages.bert.actors=2", "--set", "ray.stages.cnn.actors=2"]}
        import ray

        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        results = {}
        for name, extra in settings.items():
            work = tmp / name.replace(" ", "_").replace(",", "")
            for stage in ("clean_text", "clean_image"):
                mmp(["run", stage, "-w", str(work), *base])
            row = {}
            for stage in ("bert", "cnn"):
                mmp(["run", stage, "-w", str(work), *base, *extra])
                report = json.loads((work / "runs" / "latest.json").read_text())
                s = report["stages"][stage]
                row[stage] = round(s["computed"] / s["seconds"], 1) if s["seconds"] else None
            results[name] = row
            print(f"{name:<16} bert {row['bert']:>6} items/s   cnn {row['cnn']:>6} items/s", flush=True)
        ray.shutdown()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ray_scaling.json").write_text(json.dumps({"items": N, **where, "items_per_s": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
