"""The Ray executor: one Ray Data execution per stage per run, workers that read and write the cache.

The driver describes every pending batch of a stage as jobs (``pipeline.jobs``: keys, item ids and
where each input lives, in JSON — a few hundred bytes per item) and streams them through one
``map_batches``: stages that hold a model run on an actor pool created once per run (``actors``,
``num_cpus``, ``num_gpus`` from ``[ray.stages.<name>]``), each actor loading its model once; the other
stages run as tasks whose worker processes keep their stage between tasks. Workers read their inputs,
compute, write their shards to ``cache.root`` and return only shard names, checksums, keys and item
errors, which the driver commits. Results are iterated as they stream in (Ray Data's backpressure
bounds what is in flight), so the driver holds O(keys), never arrays. The jobs enter as in-memory blocks
(``from_items``): no read task needs a CPU, so an actor holding a one-CPU node's only CPU cannot starve
its own input (as ``ray.data.range(n).map_batches(Actor, num_cpus=1)`` does on such a node).

Lost workers: actors restart (``max_restarts``) and their jobs run again (``max_task_retries``), tasks
retry (``max_retries``), all up to ``ray.retries``; the driver commits each job at most once. An actor
whose model cannot load answers every job with that error, which the runner turns into a stage error.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import time
import warnings
from typing import Any, Iterator

from ..config import RayConfig
from ..stage import Stage
from . import Executor as Base


# `ray start --head` turns token authentication on (Ray 2.60 does); a driver without it cannot connect.
AUTH_HINT = ("If the cluster was started with `ray start` (token authentication on by default), set RAY_AUTH_MODE=token "
             "and make its token available (~/.ray/auth_token from the head, or RAY_AUTH_TOKEN)")


def worker_section(section: dict, threads: int) -> dict:
    """A stage's settings on a Ray worker: ``threads = 0`` ("the cores this process may use") becomes the
    worker's ``num_cpus``, since Ray does not pin its processes to cores (ONNX Runtime, OpenVINO and numpy
    would otherwise take every core of the node, oversubscribing it); explicit ``threads`` are kept."""
    return {**section, "threads": threads} if section.get("threads") == 0 else section


class _Worker:
    """The stage inside one Ray worker process, set up once; jobs in, JSON results out."""

    def __init__(self, ref: str, section: dict, used: dict, root: str, cache: dict, counter, threads: int):
        from pipeline.config import CacheConfig
        from pipeline.fs import Folder
        from pipeline.jobs import ShardReader

        import ray

        self.id = f"{ray.get_runtime_context().get_node_id()[:8]}:{os.getpid()}"
        self.reader, self.cache, self.error = ShardReader(Folder(root)), CacheConfig(**cache), None
        for var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):  # as Ray does for OMP/torch
            os.environ.setdefault(var, str(threads))
        section = worker_section(section, threads)
        try:
            module, _, name = ref.partition(":")
            cls = getattr(importlib.import_module(module), name)
            from pipeline.config import SECTIONS

            self.stage = cls(cls.Config(**section), {name: SECTIONS[name](**values) for name, values in used.items()})
            self.stage.ensure_ready()
        except Exception as exc:  # noqa: BLE001 - reported with every job; the driver makes it a stage error
            self.error = f"{type(exc).__name__}: {exc}"
            return
        ray.get(counter.loaded.remote(self.id, time.time()))

    def __call__(self, batch) -> dict[str, list]:
        from pipeline.jobs import run_job

        out = []
        for payload in batch["payload"]:
            job = json.loads(payload)
            if self.error:
                result = {"job": job["job"], "setup_error": self.error}
            else:
                result = {**run_job(self.stage, job, self.reader, self.cache), "worker": self.id}
            out.append(json.dumps(result))
        return {"result": out}


_TASK_WORKERS: dict[str, _Worker] = {}


def _task(batch, run: str, **kwargs):
    if run not in _TASK_WORKERS:  # a worker process keeps its stage across the tasks of one execution
        _TASK_WORKERS.clear()
        _TASK_WORKERS[run] = _Worker(**kwargs)
    return _TASK_WORKERS[run](batch)


def _counter_class(ray):
    @ray.remote(num_cpus=0)
    class Loads:
        """Counts stage set-ups (model loads) and when each worker became ready."""

        def __init__(self):
            self.ready: list[tuple[str, float]] = []

        def loaded(self, worker: str, at: float) -> None:
            self.ready.append((worker, at))

        def summary(self) -> list[tuple[str, float]]:
            return self.ready

    return Loads


class Executor(Base):
    name = "ray"
    writes_shards = True

    def __init__(self, config):
        super().__init__(config)
        self.cfg: RayConfig = config["ray"]
        self._facts: dict[str, Any] = {"engine": "ray"}

    @property
    def facts(self) -> dict[str, Any]:
        return self._facts

    def spec(self, stage: Stage) -> dict[str, float]:
        return {"actors": 1, "num_cpus": 1, "num_gpus": 0, **self.cfg.stages.get(stage.name, {})}

    def prepare(self, stage: Stage) -> None:
        """Start (or connect to) Ray and check that some node can host one worker of this stage."""
        import logging

        import ray
        from ray.data import DataContext

        if not ray.is_initialized():
            # "local": start one here; None would join whatever cluster /tmp/ray last recorded.
            address = self.cfg.address or os.environ.get("RAY_ADDRESS") or "local"
            try:
                ray.init(address=address, num_cpus=(self.cfg.num_cpus or None) if address == "local" else None,
                         include_dashboard=False, ignore_reinit_error=True, logging_level="ERROR", log_to_driver=False)
            except ConnectionError as exc:
                raise ConnectionError(f"{exc}. {AUTH_HINT}" if address != "local" and not os.environ.get("RAY_AUTH_MODE")
                                      else str(exc)) from None
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # no per-dataset "execution finished" lines
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.wait_for_min_actors_s = max(1, int(self.cfg.start_timeout))  # the whole pool loads, then work flows
        spec = self.spec(stage)
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        fits = sum(min(n.get("CPU", 0) // spec["num_cpus"] if spec["num_cpus"] else 1 << 30,
                       n.get("GPU", 0) // spec["num_gpus"] if spec["num_gpus"] else 1 << 30) for n in nodes)
        wanted = int(spec["actors"]) if stage.holds_model else 1
        if fits < wanted:
            offered = sorted((n.get("CPU", 0), n.get("GPU", 0)) for n in nodes)
            raise RuntimeError(f"the Ray cluster can host {int(fits)} of the {wanted} workers that ray.stages.{stage.name} asks "
                               f"for (num_cpus={spec['num_cpus']}, num_gpus={spec['num_gpus']} each); its nodes offer "
                               f"(CPU, GPU) {offered}")

    def slots(self, stage: Stage) -> int:
        """How many jobs can run at once: the actors, or the cluster's CPUs over a task's num_cpus."""
        import ray

        spec = self.spec(stage)
        if stage.holds_model:
            return int(spec["actors"])
        return max(1, int(ray.cluster_resources().get("CPU", 1) / max(spec["num_cpus"], 0.01)))

    def run_jobs(self, stage: Stage, jobs: list[dict], root: str) -> Iterator[dict]:
        """Results as workers finish them (any order); ``facts`` is complete once this is exhausted."""
        import ray

        spec, self._facts = self.spec(stage), {"engine": "ray"}
        counter = _counter_class(ray).remote()
        cls = type(stage)
        args = {"ref": f"{cls.__module__}:{cls.__qualname__}", "section": dataclasses.asdict(stage.config),
                "used": {name: dataclasses.asdict(c) for name, c in stage.used.items()}, "root": root,
                "cache": dataclasses.asdict(self.config["cache"]), "counter": counter,
                "threads": max(1, math.floor(spec["num_cpus"]))}
        rows = [{"job": job["job"], "payload": json.dumps(job)} for job in jobs]
        sent = sum(len(r["payload"]) for r in rows) + len(json.dumps({k: v for k, v in args.items() if k != "counter"}))
        resources = {"num_cpus": spec["num_cpus"], "num_gpus": spec["num_gpus"]}
        retries = self.cfg.retries
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")  # retries have no named parameter in 2.60
        if stage.holds_model:
            ds = ds.map_batches(_Worker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=int(spec["actors"])),
                                fn_constructor_kwargs=args, max_restarts=retries, max_task_retries=retries, **resources)
        else:
            run = f"{os.getpid()}-{time.time_ns()}"
            ds = ds.map_batches(_task, batch_size=1, fn_kwargs={**args, "run": run}, max_retries=retries, **resources)
        started, received, results = time.time(), 0, []
        for row in ds.iter_rows():
            received += len(row["result"])
            result = json.loads(row["result"])
            results.append({k: result.get(k) for k in ("started", "finished", "shards", "errors", "worker")})
            yield result
        loads = ray.get(counter.summary.remote())
        items = sum(len(batch) for job in jobs for batch in job["batches"])
        self._facts = {"engine": "ray", **self._run_facts(stage, spec, loads, results, started),
                      "driver_bytes_per_item": round((sent + received) / max(items, 1), 1)}

    @staticmethod
    def _run_facts(stage, spec, loads, results, started) -> dict[str, Any]:
        """Workers and start-up; items/s once warm: from when every worker had finished its first job
        (which pays one-off costs such as tracing a tf.function) to the last result."""
        facts: dict[str, Any] = {"actors": int(spec["actors"]), "model_loads": len(loads)} if stage.holds_model \
            else {"workers": len({w for w, _ in loads})}
        done = [r for r in results if r.get("finished")]
        facts["nodes"] = len({w.split(":")[0] for w, _ in loads})  # nodes the workers ran on
        if not loads or not done:
            return facts
        # Ready: when the pool's first actors (a task stage's first worker) had loaded; restarts come later.
        first = int(spec["actors"]) if stage.holds_model else 1
        facts["startup_s"] = round(sorted(t for _, t in loads)[min(first, len(loads)) - 1] - started, 2)
        first_done: dict[str, float] = {}
        for r in done:
            first_done[r["worker"]] = min(first_done.get(r["worker"], r["finished"]), r["finished"])
        warm, end = max(first_done.values()), max(r["finished"] for r in done)
        facts["warm_s"] = round(warm - started, 2)
        items = 0.0
        for r in done:  # the part of each job that ran after ``warm``, pro rata
            overlap = r["finished"] - max(r["started"], warm)
            if overlap > 0:
                n = sum(len(s["keys"]) for s in r["shards"]) + len(r["errors"])
                items += n * overlap / max(r["finished"] - r["started"], 1e-9)
        if end > warm:
            facts["items_per_s"] = round(items / (end - warm), 2)
        return facts
