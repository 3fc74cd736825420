"""make bench-ray: the model stages (bert, cnn) on a real multi-node Ray cluster against the local engine.

Same work everywhere: N demo images for ``cnn`` and 4N texts for ``bert`` (made from the demo's texts),
cleaned once (untimed); then each setting computes ``bert`` and ``cnn`` from scratch on a copy of that cache:

- ``local``: the local engine in a process pinned to one CPU (``taskset -c 0``), one thread;
- ``ray_1node``: a ``ray.cluster_utils.Cluster`` head (no CPUs; it hosts the driver) plus one worker
  node of one CPU, one actor;
- ``ray_2nodes``: the same with two worker nodes of one CPU each, two actors.

A worker node's processes (raylet, agents, workers) are pinned to its own core, so a "one-CPU node" uses
one core, as the local run does. Items/s are measured once warm: after the model loaded and one batch ran
(local; the first call traces ``cnn``'s tf.function), or, on Ray, the run report's ``items_per_s``: from
when every actor of the pool had finished its first job to the last result. Start-up is reported apart:
``startup_s`` (model loaded / whole pool ready) and ``warm_s`` (through the first batch or job). Also
reported: actors, model loads, payload bytes the driver sent plus received per item, the load average
(the machine is shared), how far the machine itself scales (the cnn forward pass alone, no Ray, in
one process on one core, then in two processes on two cores), and what chaining a cleaning stage into its model stage could save at most (a
worker's time reading the cleaned inputs from shards, per item, against the model stage's compute time).
Writes bench/results/ray.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
# Demo items (cnn); bert gets TEXTS_PER_ITEM texts per item. Enough that the window after warm-up spans
# several jobs per actor: at 512 images two actors had ~6 s of it, and one job more or less on one
# actor moved the 2-node figure by 15%.
N = int(float(os.environ.get("BENCH_SCALE", "1")) * 1536)
TEXTS_PER_ITEM = 4
STAGES = {"bert": "clean_text", "cnn": "clean_image"}
# Same batches everywhere (bert's default window of 256 would make one job); one thread per CPU.
SETTINGS = ["--set", 'cnn.weights="none"', "--set", "bert.batch_size=32", "--set", "bert.threads=1"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def texts_manifest(folder: Path, count: int) -> str:
    """``count`` distinct texts made from the demo's inline texts (bert is ~7x faster than cnn per item:
    it needs more items for a steady figure)."""
    import csv

    with open(folder / "demo.csv", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f) if row["text"]]
    path = folder / "texts.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows([f"x{i:05d}", f"{texts[i % len(texts)]} (ticket {i})"] for i in range(count))
    return str(path)


def bench_config():
    """The repository's pipeline.toml with SETTINGS applied; every section it holds registered first,
    as the CLI does (the stages', and serving's [serve])."""
    import serving.settings  # noqa: F401
    import stages  # noqa: F401
    from pipeline.config import Config

    return Config.load(ROOT / "pipeline.toml", [s for s in SETTINGS if s != "--set"])


@contextmanager
def planned(workdir: str | Path, manifest: str, stage: str):
    """The work directory, its plan of ``stage`` cut into one-batch jobs, and a worker's shard reader."""
    from pipeline.fs import Folder
    from pipeline.jobs import ShardReader, describe_jobs, shard_root
    from pipeline.manifest import load
    from pipeline.runner import Workspace

    config = bench_config()
    items = load([manifest], config["data"].root)
    with Workspace(workdir, config) as ws:
        plan = next(p for p in ws.plan([stage], items, dry=True) if p.stage.name == stage)
        ids = plan.ids_by_key()
        keys = list(ids)
        batches = [keys[i : i + plan.stage.batch_size] for i in range(0, len(keys), plan.stage.batch_size)]
        jobs = describe_jobs(plan, batches, ids, ws.store, per_job=1)
        yield ws, items, jobs, ShardReader(Folder(shard_root(ws.store)))


def local_one(stage: str, workdir: str, manifest: str) -> dict:
    """In a process pinned to one CPU: load the model and compute one batch (both timed apart, as the
    first job of a Ray worker is), then run the stage on every item."""
    from pipeline.report import Report
    from pipeline.stage import call_isolated

    with planned(workdir, manifest, stage) as (ws, items, jobs, reader):
        started = time.perf_counter()
        ws.stage(stage).ensure_ready()
        startup = time.perf_counter() - started
        call_isolated(ws.stage(stage), reader.records(jobs[0], jobs[0]["batches"][0]))
        warm = time.perf_counter() - started
        report = ws.run([stage], items, Report("bench", quiet=True)).data["stages"][stage]
    return {"startup_s": round(startup, 2), "warm_s": round(warm, 2),
            "items_per_s": round(report["computed"] / report["seconds"], 2)}


def run_local(stage: str, workdir: Path, manifest: str) -> dict:
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-m", "bench.ray_scaling", "--local", stage, str(workdir),
                          manifest], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"the local {stage} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def pin(node, core: int) -> None:
    """One node, one CPU: its raylet, agents and workers (present and future: they inherit it) on ``core``."""
    import psutil

    for infos in node.all_processes.values():
        for info in infos:
            process = psutil.Process(info.process.pid)
            for p in [process, *process.children(recursive=True)]:
                p.cpu_affinity([core])


def run_cluster(nodes: int, work: dict[str, Path], manifests: dict[str, str]) -> dict[str, dict]:
    """A head without CPUs (it hosts the driver) plus ``nodes`` worker nodes, node k pinned to core k."""
    import ray
    from ray.cluster_utils import Cluster

    from mmpipe_cli.commands import main as mmp

    small = {"object_store_memory": 100 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **small})
    for core in range(nodes):
        pin(cluster.add_node(num_cpus=1, **small), core % (os.cpu_count() or 1))
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    cluster.wait_for_nodes()
    out = {}
    try:
        for stage, workdir in work.items():
            args = ["run", stage, "-m", manifests[stage], "-w", str(workdir), "-q", "-c", str(ROOT / "pipeline.toml"), *SETTINGS,
                    "--engine", "ray", "--set", f'ray.address="{cluster.address}"', "--set", f"ray.stages.{stage}.actors={nodes}"]
            if mmp(args) != 0:
                raise RuntimeError(f"mmp {' '.join(args)} failed")
            out[stage] = json.loads((workdir / "runs" / "latest.json").read_text())["info"][stage]
    finally:
        ray.shutdown()
        cluster.shutdown()
    return out


def upstream_read_ms(workdir: Path, manifest: str, stage: str) -> float:
    """What a worker spends reading one item's cleaned input from the shards (what chaining would save)."""
    with planned(workdir, manifest, stage) as (_, _, jobs, reader):
        started = time.perf_counter()
        for job in jobs:
            for batch in job["batches"]:
                reader.records(job, batch)
        return 1000 * (time.perf_counter() - started) / max(sum(len(b) for j in jobs for b in j["batches"]), 1)


def raw_cnn(barrier: str, count: int) -> float:
    """Images/s of the cnn stage's forward pass alone (no pipeline, no Ray) in this process, timed once
    ``count`` such processes are warm: how far the machine itself scales from one core to two."""
    import numpy as np

    from pipeline.stage import stage_class

    config = bench_config()
    stage = stage_class("cnn")(config["cnn"])
    stage.ensure_ready()
    images = np.random.default_rng(0).integers(0, 256, (stage.batch_size, 224, 224, 3), dtype=np.uint8)
    stage.features(images)  # traces the tf.function
    Path(f"{barrier}.{os.getpid()}").touch()
    while len(list(Path(barrier).parent.glob(Path(barrier).name + ".*"))) < count:
        time.sleep(0.01)
    started = time.perf_counter()
    for _ in range(6):
        stage.features(images)
    return 6 * len(images) / (time.perf_counter() - started)


def raw_scaling(tmp: Path) -> dict[str, float]:
    """The cnn forward pass in one process on core 0, then in two at once on cores 0 and 1."""
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT)}
    out = {}
    for count in (1, 2):
        barrier = str(tmp / f"barrier{count}")
        procs = [subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-m", "bench.ray_scaling", "--raw", barrier,
                                   str(count)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for core in range(count)]
        out[f"{count}_core{'s' if count > 1 else ''}"] = round(sum(float(p.communicate()[0].split()[-1]) for p in procs), 2)
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b; None when either is missing (too few jobs to measure after warm-up: raise BENCH_SCALE)."""
    return round(a / b, 2) if a and b else None


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from mmpipe_cli.commands import main as mmp

    from bench.run import machine, machine_line

    where = machine()
    print(machine_line(where), flush=True)
    load_before = os.getloadavg()
    results: dict[str, dict] = {s: {"items_per_s": {}, "startup_s": {}, "warm_s": {}, "actors": {}, "model_loads": {},
                                    "driver_bytes_per_item": {}} for s in STAGES}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        mmp(["demo-data", "--out", str(tmp / "data"), "--items", str(N)])
        manifests = {"cnn": str(tmp / "data" / "demo.csv"), "bert": texts_manifest(tmp / "data", TEXTS_PER_ITEM * N)}
        base = tmp / "base"
        for stage, upstream in STAGES.items():
            mmp(["run", upstream, "-m", manifests[stage], "-w", str(base), "-q", "-c", str(ROOT / "pipeline.toml"), *SETTINGS])

        def fresh(name: str) -> dict[str, Path]:
            work = {}
            for stage in STAGES:
                work[stage] = tmp / f"{name}-{stage}"
                shutil.copytree(base, work[stage])
            return work

        for stage, workdir in fresh("local").items():
            local = run_local(stage, workdir, manifests[stage])
            results[stage]["items_per_s"]["local"] = local["items_per_s"]
            results[stage]["startup_s"]["local"] = local["startup_s"]
            results[stage]["warm_s"]["local"] = local["warm_s"]
            print(f"local      {stage:<5} {local['items_per_s']:>7} items/s (model load {local['startup_s']} s, "
                  f"warm after {local['warm_s']} s)", flush=True)
        chaining = {stage: round(upstream_read_ms(base, manifests[stage], stage), 2) for stage in STAGES}
        raw = raw_scaling(tmp)
        print(f"cnn forward alone, no Ray: {raw['1_core']} images/s on one core, {raw['2_cores']} on two", flush=True)
        for nodes, name in ((1, "ray_1node"), (2, "ray_2nodes")):
            for stage, info in run_cluster(nodes, fresh(name), manifests).items():
                row = results[stage]
                row["items_per_s"][name] = info.get("items_per_s")
                row["startup_s"][name] = info.get("startup_s")
                row["warm_s"][name] = info.get("warm_s")
                row["actors"][name], row["model_loads"][name] = info["actors"], info["model_loads"]
                row["driver_bytes_per_item"][name] = info["driver_bytes_per_item"]
                print(f"{name:<10} {stage:<5} {str(info.get('items_per_s')):>7} items/s (pool ready {info.get('startup_s')} s, "
                      f"warm {info.get('warm_s')} s, "
                      f"{info['actors']} actors, {info['model_loads']} model loads, {info['driver_bytes_per_item']} B/item "
                      "through the driver)", flush=True)
    for stage, row in results.items():
        rate = row["items_per_s"]
        compute_ms = 1000 / rate["local"]
        row["ratios"] = {"ray_2nodes/ray_1node": ratio(rate["ray_2nodes"], rate["ray_1node"]),
                         "ray_1node/local": ratio(rate["ray_1node"], rate["local"])}
        row["chaining"] = {"upstream_read_ms_per_item": chaining[stage], "compute_ms_per_item": round(compute_ms, 2),
                           "saving_at_most": round(chaining[stage] / (chaining[stage] + compute_ms), 3)}
        row["goals"] = {"model_loads == actors": all(row["model_loads"][k] == row["actors"][k] for k in row["actors"]),
                        "driver_bytes_per_item <= 4096": all(v <= 4096 for v in row["driver_bytes_per_item"].values()),
                        "ray_2nodes/ray_1node >= 1.5": (row["ratios"]["ray_2nodes/ray_1node"] or 0) >= 1.5,
                        "ray_1node/local >= 0.8": (row["ratios"]["ray_1node/local"] or 0) >= 0.8}
        print(f"{stage}: 2 nodes / 1 node {row['ratios']['ray_2nodes/ray_1node']}x, 1 node / local "
              f"{row['ratios']['ray_1node/local']}x; reading cleaned inputs {chaining[stage]} ms/item vs compute "
              f"{compute_ms:.1f} ms/item (chaining saves at most {100 * row['chaining']['saving_at_most']:.1f}%)")
    out = {"items": {"bert": TEXTS_PER_ITEM * N, "cnn": N}, **where, "load_average": {"before": [round(x, 2) for x in load_before],
                                                                       "after": [round(x, 2) for x in os.getloadavg()]},
           "stages": results, "machine_cnn_forward_images_per_s": {**raw, "2_cores/1_core": ratio(raw["2_cores"], raw["1_core"])}}
    path = ROOT / "bench" / "results" / "ray.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"load average {out['load_average']['before']} before, {out['load_average']['after']} after; wrote {path}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--local"]:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(local_one(*sys.argv[2:5])))
        sys.exit(0)
    if sys.argv[1:2] == ["--raw"]:
        sys.path.insert(0, str(ROOT))
        print(raw_cnn(sys.argv[2], int(sys.argv[3])))
        sys.exit(0)
    sys.exit(main())
