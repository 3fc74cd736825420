"""The runner: plan every stage from the index, compute only missing keys in bounded batches through the
chosen executor, commit shards as it goes, collect per-item failures; dataset-level stages are planned
and run in the same order, by the same loop.

``Workspace`` is a context manager over a work directory: its cache, raw-hash memo and run lock.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

from .buffer import ShardBuffer
from .config import Config
from .dataset import DatasetContext
from .errors import CacheCorruptError, OutputMismatch, PipelineError, StorageError, describe
from .executors import get_executor
from .jobs import compute_jobs
from .keys import RawHashMemo
from .lock import RunLock
from .manifest import Item
from .outputs import check_record
from .plan import RAW_PREFIX, RawResolver, StagePlan, ancestors_and_self, plan_stage
from .report import Report
from .status import record_plan
from .stage import Stage, build_stage, call_isolated, downstream, stage_class  # noqa: F401  (call_isolated: re-exported)
from .store import Store

MAX_REPLANS = 3


class Workspace:
    """A work directory: its cache, its raw-hash memo, its run lock. Use it in a ``with`` block."""

    def __init__(self, workdir: str | Path, config: Config, force: tuple[str, ...] = ()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.force = set(force)  # dataset-level stages to recompute even when their output exists
        self.executor = get_executor(config["run"].engine, config)
        self.store = Store(self.workdir, shard_root=config["cache"].root)
        self.memo = RawHashMemo(self.workdir / "cache" / "raw_hashes.sqlite")
        self.raw = RawResolver(self.memo, config)
        self.stages: dict[str, Stage] = {}
        self._lock = RunLock(self.workdir, config["run"].lock_timeout)

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stage(self, name: str) -> Stage:
        if name not in self.stages:
            stage = build_stage(name, self.config)
            stage.digest_file = self.memo.digest_path
            stage.model_dir = self.workdir / "models"
            self.stages[name] = stage
        return self.stages[name]

    def lock(self, command: str) -> None:
        self._lock.acquire(command)

    def close(self) -> None:
        self.memo.close()
        self.store.close()
        self._lock.release()

    # ---- planning ------------------------------------------------------------------------------
    def plan(self, targets: list[str], items: list[Item], dry: bool) -> Iterator[StagePlan]:
        """Plans in dependency order. Otherwise than in a dry plan, the caller runs each stage before the
        next plan is made (a dataset-level stage's plan is completed by running it: ``run_dataset`` both
        decides and computes). A key depends on its upstream output's digest, so in a dry plan an item
        whose upstream output is still to compute has no key yet: it is ``pending``."""
        available: dict[str, dict[str, str]] = {}
        applies: dict[str, set[str]] = {}
        unresolved: dict[str, set[str]] = {}
        results: dict[str, Any] = {}
        for name in ancestors_and_self(targets):
            stage = self.stage(name)
            if stage.dataset_level:
                plan = StagePlan(stage, context=self._dataset_context(name, items, available, results, dry))
                if dry:
                    _complete(plan)
                yield plan
                results[name] = plan.result
            else:
                digests = {s: self.store.committed(s) for s in stage.inputs if not s.startswith("raw:")}
                plan = plan_stage(stage, items, available, digests, applies, unresolved, self.raw)
                yield plan
            done = self.store.committed(name)
            applies[name] = set(plan.keys)
            applies[name].update(item.id for item, _ in plan.input_errors)  # (no copy of a 50,000-id set)
            everything = plan.payload.keys() <= done.keys() if not stage.dataset_level else False
            available[name] = plan.keys if everything else {i: k for i, k in plan.keys.items() if k in done}
            if dry:
                known_bad = {k for k, f in self.store.failures(name).items() if f[3]}
                unresolved[name] = {i for i, k in plan.keys.items() if k not in done and k not in known_bad}
                unresolved[name].update(plan.pending)
        self.memo.save()

    def _dataset_context(self, name: str, items: list[Item], available: dict[str, dict[str, str]],
                         results: dict[str, Any], dry: bool) -> DatasetContext:
        stage = self.stage(name)
        return DatasetContext(
            name=name, items=items, config=self.config, store=self.store, workdir=self.workdir,
            inputs={s: available.get(s, {}) for s in stage.inputs},
            digests={s: self.store.committed(s) for s in stage.inputs}, results=results, dry=dry,
            force=name in self.force,
            make_buffer=lambda digest, spec: ShardBuffer(self.store, name, self.config, digest, spec),
        )

    def dataset_context(self, name: str, items: list[Item], report: Report | None = None) -> DatasetContext:
        """A context for running dataset-level stage ``name`` on its own, from what the index holds now
        (e.g. fusing new items with a model's stored statistics)."""
        inputs = list(self.stage(name).inputs)
        available: dict[str, dict[str, str]] = {}
        for plan in self.plan(inputs, items, dry=False):  # nothing runs: committed keys only
            if plan.stage.name in inputs:
                done = self.store.committed(plan.stage.name)
                available[plan.stage.name] = {i: k for i, k in plan.keys.items() if k in done}
        ctx = self._dataset_context(name, items, available, {}, dry=False)
        ctx.report = report
        return ctx

    # ---- running -------------------------------------------------------------------------------
    def run(self, targets: list[str], items: list[Item], report: Report) -> Report:
        self.store.remove_debris()
        for message in self.store.check_sizes():
            report.warn(message)
        for attempt in range(MAX_REPLANS):
            self.store.refresh()
            try:
                for plan in self.plan(targets, items, dry=False):
                    if plan.stage.dataset_level:
                        self._run_dataset(plan, report)
                    else:
                        self._run_stage(plan, report)
                return report
            except CacheCorruptError as exc:
                report.warn(str(exc))
                if attempt == MAX_REPLANS - 1:
                    raise
                report.restart()  # replan from the index: counts start again, committed work stays
        return report

    def _run_dataset(self, plan: StagePlan, report: Report) -> None:
        started = time.monotonic()
        stats = report.stage(plan.stage.name)
        plan.context.report = report
        _complete(plan)
        stats["computed"] += plan.result.computed
        stats["cached"] += plan.result.cached
        stats["seconds"] = round(stats["seconds"] + time.monotonic() - started, 3)

    def _run_stage(self, plan: StagePlan, report: Report) -> None:
        stage = plan.stage
        started = time.monotonic()
        stats = report.stage(stage.name)
        committed = self.store.committed(stage.name)
        for item, exc in plan.input_errors:
            report.fail(stage.name, item.id, exc.kind, f"item {item.id}: {exc}")
        stats["skipped"] += len(plan.blocked)
        if plan.payload.keys() <= committed.keys():  # nothing to do: no need to form batches
            stats["cached"] += len(plan.keys)
            record_plan(self.store, plan, stats)
            stats["seconds"] = round(stats["seconds"] + time.monotonic() - started, 3)
            return
        before = set(committed)
        failures = self.store.failures(stage.name)
        retry_all = self.config["run"].retry_permanent_failures
        ids_by_key = plan.ids_by_key()
        # Batches are fixed slices of ALL of the stage's keys in manifest order, not of the missing ones:
        # a run resumed after a crash computes each batch with the same members as an uninterrupted
        # run would, so model outputs match to the last bit (float sums depend on batch composition).
        keys = list(ids_by_key)
        batches: list[list[str]] = []
        for start in range(0, len(keys), stage.batch_size):
            todo = []
            for key in keys[start : start + stage.batch_size]:
                ids = ids_by_key[key]
                if key in committed:
                    stats["cached"] += len(ids)
                elif key in failures and failures[key][3] and not retry_all:
                    _, error, message, _ = failures[key]
                    for item_id in ids:
                        report.fail(stage.name, item_id, error, f"item {item_id}: {message}", cached=True)
                else:
                    todo.append(key)
            if todo:
                batches.append(todo)
        if batches:
            self._compute(plan, batches, ids_by_key, report)
        record_plan(self.store, plan, stats, before)
        stats["seconds"] = round(stats["seconds"] + time.monotonic() - started, 3)

    def _inputs(self, plan: StagePlan, keys: list[str], ids_by_key: dict[str, list[str]], store: Store) -> list[dict[str, Any]]:
        stage = plan.stage
        source = stage.inputs[0]
        if source.startswith(RAW_PREFIX):
            out = []
            for k in keys:
                ref = plan.payload[k]
                out.append({"id": ids_by_key[k][0], "text": ref.text, "path": ref.path})
            return out
        upstream_keys = [plan.payload[k][0] for k in keys]
        records = store.read(source, upstream_keys)
        return [{"id": ids_by_key[k][0], **records[u]} for k, u in zip(keys, upstream_keys)]

    def _guarded(self, stage: Stage, batches, results, report: Report):
        """Pairs (batch keys, outputs); an executor failure (e.g. a Ray actor whose model cannot load)
        ends this stage as a stage error, keeping what was already computed."""
        results = iter(results)
        for keys in batches:
            try:
                outputs = next(results)
            except (PipelineError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001
                report.stage_error(stage.name, f"{type(exc).__name__}: {exc}", downstream(stage.name))
                return
            yield keys, outputs

    def _compute(self, plan: StagePlan, batches: list[list[str]], ids_by_key: dict[str, list[str]], report: Report) -> None:
        stage = plan.stage
        stats = report.stage(stage.name)
        failed: list[tuple[str, str, str, str, bool]] = []
        try:
            self.executor.prepare(stage)
            spec = stage.output_spec()
        except Exception as exc:  # noqa: BLE001 - a stage that cannot start must not stop the others
            report.stage_error(stage.name, f"{type(exc).__name__}: {exc}", downstream(stage.name))
            return
        if self.executor.writes_shards:  # workers read their inputs and write shards; here we only commit
            compute_jobs(self.store, plan, batches, ids_by_key, report, self.executor, downstream(stage.name),
                         self.config["cache"].shard_rows)
            report.info(stage.name, {**stage.describe_run(), **self.executor.facts})
            return
        buffer = ShardBuffer(self.store, stage.name, self.config, stage.digest(), spec)
        report.info(stage.name, {**stage.describe_run(), **self.executor.facts})
        bar = report.progress(stage.name, sum(len(ids_by_key[k]) for b in batches for k in b))
        results = self.executor.map(stage, self._prefetched(plan, batches, ids_by_key))
        try:
            for keys, outputs in self._guarded(stage, batches, results, report):
                for key, out in zip(keys, outputs):
                    ids = ids_by_key[key]
                    problem = None if isinstance(out, BaseException) else check_record(spec, out)
                    if problem:
                        out = OutputMismatch(f"stage {stage.name} broke its declared outputs: {problem}")
                    if isinstance(out, BaseException):
                        error, message, permanent = describe(out)
                        for item_id in ids:
                            report.fail(stage.name, item_id, error, f"item {item_id}: {message}")
                        failed.append((key, ids[0], error, message, permanent))
                    else:
                        buffer.add(key, out, plan.input_digests[key])
                        stats["computed"] += len(ids)
                    bar.update(len(ids))
                if failed:
                    self.store.record_failures(stage.name, failed)
                    failed = []
                buffer.maybe_flush()  # only between batches: a committed shard holds whole batches
            buffer.flush()
        except StorageError:
            raise  # the cache cannot be written: do not try again on the way out
        except BaseException:
            buffer.flush()  # Ctrl-C or a failure elsewhere: keep what this stage already computed
            raise
        finally:
            bar.close()
            # Close the input generators now, not whenever the garbage collector gets to them (a
            # finalizer that waits on the prefetch thread during an import would deadlock).
            results.close()

    def _prefetched(self, plan: StagePlan, batches: list[list[str]], ids_by_key) -> Iterator[list[dict[str, Any]]]:
        """Inputs batch by batch; the next batch is read on a thread (with its own index connection)
        while the current one computes. Nothing here blocks on that thread when the generator is closed,
        so closing it can never deadlock (e.g. if the garbage collector closes it during an import)."""
        from concurrent.futures import ThreadPoolExecutor

        reader = Store(self.workdir, any_thread=True, shard_root=self.config["cache"].root)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        future = None
        try:
            for i, keys in enumerate(batches):
                if future is None:
                    future = pool.submit(self._inputs, plan, keys, ids_by_key, reader)
                records = future.result()
                future = pool.submit(self._inputs, plan, batches[i + 1], ids_by_key, reader) if i + 1 < len(batches) else None
                yield records
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            if future is None or future.done():
                reader.close()


def _complete(plan: StagePlan) -> None:
    """Run (or, in a dry plan, only plan) a dataset-level stage; its result fills the plan."""
    plan.result = plan.stage.run_dataset(plan.context)
    plan.keys = dict(plan.result.keys)
