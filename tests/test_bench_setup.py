"""The benchmarks' own set-up paths, cheaply: `make bench-ray` loads the repository's pipeline.toml (every
section it holds must be registered, as the CLI does) and cuts a plan into the jobs it times."""

import csv
import subprocess
import sys

from bench import ray_scaling
from mmpipe_cli.commands import main as mmp


def test_ray_bench_loads_the_repository_config_and_plans_one_batch_jobs(tmp_path):
    fresh = subprocess.run([sys.executable, "-c", "from bench.ray_scaling import bench_config; bench_config()"],
                           cwd=ray_scaling.ROOT, capture_output=True, text=True)  # as the bench's subprocesses do
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    config = ray_scaling.bench_config()
    assert config["bert"].batch_size == 32 and config["cnn"].weights == "none" and "serve" in config.sections
    with open(tmp_path / "demo.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "text"], ["a", "refund please"], ["b", "the app crashes"], ["c", ""]])
    manifest = ray_scaling.texts_manifest(tmp_path, 70)
    work = tmp_path / "w"
    assert mmp(["run", "clean_text", "-m", manifest, "-w", str(work), "-q", "-c", str(ray_scaling.ROOT / "pipeline.toml"),
                *ray_scaling.SETTINGS]) == 0
    with ray_scaling.planned(work, manifest, "bert") as (_, items, jobs, reader):
        assert len(items) == 70
        assert [len(job["batches"]) for job in jobs] == [1, 1, 1]
        assert [len(job["batches"][0]) for job in jobs] == [32, 32, 6]
        records = reader.records(jobs[2], jobs[2]["batches"][0])
        assert all(r["text"].startswith(("refund please (ticket", "the app crashes (ticket")) for r in records)
