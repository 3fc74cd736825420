"""The runner: plan every stage from the index, compute only missing keys in bounded batches, commit
shards as it goes, collect per-item failures, and write the run report.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .config import Config
from .errors import CacheCorruptError, ItemError, LockBusyError, PipelineError, StorageError, describe
from .keys import RawHashMemo
from .manifest import Item
from .plan import RAW_PREFIX, RawResolver, StagePlan, ancestors_and_self, plan_stage
from .report import Report
from .stage import STAGES, Stage
from .store import Store

MAX_REPLANS = 3


def _nbytes(record: dict[str, Any]) -> int:
    return sum(v.nbytes if isinstance(v, np.ndarray) else len(str(v)) for v in record.values())


class ShardBuffer:
    """Collects computed records; commits a shard at a row, size or time threshold."""

    def __init__(self, store: Store, stage: str, config: Config):
        cfg = config["cache"]
        self.store, self.stage = store, stage
        self.max_rows, self.max_bytes, self.max_seconds = cfg.shard_rows, cfg.shard_mb * 1e6, cfg.flush_seconds
        self.keys: list[str] = []
        self.records: list[dict[str, Any]] = []
        self.bytes = 0
        self.since = time.monotonic()

    def add(self, key: str, record: dict[str, Any]) -> None:
        self.keys.append(key)
        self.records.append(record)
        self.bytes += _nbytes(record)

    def maybe_flush(self) -> None:
        if (
            len(self.keys) >= self.max_rows
            or self.bytes >= self.max_bytes
            or time.monotonic() - self.since >= self.max_seconds
        ):
            self.flush()

    def flush(self) -> None:
        if self.keys:
            self.store.commit_shard(self.stage, self.keys, self.records)
        self.keys, self.records, self.bytes, self.since = [], [], 0, time.monotonic()


class Workspace:
    """A work directory: its cache, its raw-hash memo, its run lock."""

    def __init__(self, workdir: str | Path, config: Config):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.store = Store(self.workdir, shard_root=config["cache"].root)
        self.memo = RawHashMemo(self.workdir / "cache" / "raw_hashes.sqlite")
        self.raw = RawResolver(self.memo, config)
        self.stages: dict[str, Stage] = {}
        self._lock = None

    def stage(self, name: str) -> Stage:
        if name not in self.stages:
            stage = STAGES[name](self.config[name])
            stage.digest_file = self.memo.digest_path
            self.stages[name] = stage
        return self.stages[name]

    # ---- locking -------------------------------------------------------------------------------
    def lock(self, command: str) -> None:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.workdir / ".lock"))
        owner = self.workdir / ".lock.owner"
        try:
            lock.acquire(timeout=self.config["run"].lock_timeout)
        except Timeout:
            try:
                who = json.loads(owner.read_text())
                holder = f"pid {who['pid']} on {who['host']} running '{who['command']}' since {who['since']}"
            except (OSError, ValueError, KeyError):
                holder = "another process"
            raise LockBusyError(
                f"work directory {self.workdir} is in use by {holder}; waited {self.config['run'].lock_timeout:g} s "
                "(run.lock_timeout). Runs on one work directory take turns; the lock is released when that process "
                "exits, even if it is killed."
            ) from None
        owner.write_text(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        )
        self._lock = lock

    def close(self) -> None:
        self.memo.close()
        self.store.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ---- planning ------------------------------------------------------------------------------
    def plan(self, targets: list[str], items: list[Item], dry: bool) -> Iterator[StagePlan]:
        """Plans in dependency order. In a dry plan every planned key counts as available downstream;
        otherwise the caller runs each stage before the next plan is made."""
        available: dict[str, dict[str, str]] = {}
        applies: dict[str, set[str]] = {}
        for name in ancestors_and_self(targets):
            if STAGES[name].dataset_level:
                continue
            plan = plan_stage(self.stage(name), items, available, applies, self.raw)
            yield plan
            applies[name] = set(plan.keys) | {item.id for item, _ in plan.input_errors}
            if dry:
                known_bad = {k for k, f in self.store.failures(name).items() if f[3]}
                available[name] = {i: k for i, k in plan.keys.items() if k not in known_bad}
            else:
                done = self.store.committed(name)
                available[name] = {i: k for i, k in plan.keys.items() if k in done}
        self.memo.save()

    # ---- running -------------------------------------------------------------------------------
    def run(self, targets: list[str], items: list[Item], report: Report) -> Report:
        self.store.remove_debris()
        for message in self.store.check_sizes():
            report.warn(message)
        for attempt in range(MAX_REPLANS):
            try:
                for plan in self.plan(targets, items, dry=False):
                    self._run_stage(plan, report)
                return report
            except CacheCorruptError as exc:
                report.warn(str(exc))
                if attempt == MAX_REPLANS - 1:
                    raise
                report.restart()  # replan from the index: counts start again, committed work stays
        return report

    def _run_stage(self, plan: StagePlan, report: Report) -> None:
        stage = plan.stage
        started = time.monotonic()
        stats = report.stage(stage.name)
        committed = self.store.committed(stage.name)
        failures = self.store.failures(stage.name)
        retry_all = self.config["run"].retry_permanent_failures
        ids_by_key = plan.ids_by_key()
        for item, exc in plan.input_errors:
            report.fail(stage.name, item.id, exc.kind, f"item {item.id}: {exc}")
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
        stats["skipped"] += len(plan.blocked)
        if batches:
            self._compute(plan, batches, ids_by_key, report)
        digest = f"{stage.digest()}|{stage.config_digest()}"
        self.store.set_latest(stage.name, [(i, k, digest) for i, k in plan.keys.items()])
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
        """Pairs (batch keys, outputs); an engine failure (e.g. a Ray actor whose model cannot load)
        ends this stage as a stage error, keeping what was already computed."""
        results = iter(results)
        for keys in batches:
            try:
                outputs = next(results)
            except (PipelineError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001
                report.stage_error(stage.name, f"{type(exc).__name__}: {exc}", self._downstream(stage.name))
                return
            yield keys, outputs

    def _downstream(self, name: str) -> list[str]:
        below = [s for s, cls in STAGES.items() if name in cls.inputs]
        return below + [d for s in below for d in self._downstream(s)]

    def _compute(self, plan: StagePlan, batches: list[list[str]], ids_by_key: dict[str, list[str]], report: Report) -> None:
        stage = plan.stage
        stats = report.stage(stage.name)
        buffer = ShardBuffer(self.store, stage.name, self.config)
        failed: list[tuple[str, str, str, str, bool]] = []
        bar = report.progress(stage.name, sum(len(ids_by_key[k]) for b in batches for k in b))
        local = self.config["run"].engine == "local"
        results = None
        try:
            if local:
                try:
                    stage.ensure_ready()
                except Exception as exc:  # noqa: BLE001 - a stage that cannot start must not stop the others
                    report.stage_error(stage.name, f"{type(exc).__name__}: {exc}", self._downstream(stage.name))
                    return
                report.info(stage.name, stage.describe_run())
                results = (call_isolated(stage, records) for records in self._prefetched(plan, batches, ids_by_key))
            else:
                self._compute_remote(plan, batches, ids_by_key, report)
                return
            for keys, outputs in self._guarded(stage, batches, results, report):
                for key, out in zip(keys, outputs):
                    ids = ids_by_key[key]
                    if isinstance(out, BaseException):
                        error, message, permanent = describe(out)
                        for item_id in ids:
                            report.fail(stage.name, item_id, error, f"item {item_id}: {message}")
                        failed.append((key, ids[0], error, message, permanent))
                    else:
                        buffer.add(key, out)
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
            if results is not None:
                results.close()


    def _compute_remote(self, plan: StagePlan, batches: list[list[str]], ids_by_key, report: Report) -> None:
        """Workers read inputs and write shards themselves; this process only commits (pipeline/jobs.py)."""
        from .jobs import compute_jobs
        from .ray_engine import RayExecutor

        stage, executor = plan.stage, RayExecutor(self.config)
        try:
            executor.prepare(stage)
        except Exception as exc:  # noqa: BLE001 - a stage that cannot start must not stop the others
            report.stage_error(stage.name, f"{type(exc).__name__}: {exc}", self._downstream(stage.name))
            return
        compute_jobs(self.store, plan, batches, ids_by_key, report, executor, self._downstream(stage.name),
                     self.config["cache"].shard_rows)
        report.info(stage.name, {**stage.describe_run(), **executor.facts})

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


def call_isolated(stage: Stage, records: list[dict[str, Any]]) -> list[Any]:
    """Run a batch; if the batch call itself breaks, run item by item so one bad item fails alone."""
    try:
        outputs = stage.process(records)
        if len(outputs) != len(records):
            raise RuntimeError(f"stage {stage.name} returned {len(outputs)} outputs for {len(records)} inputs")
        return outputs
    except (ItemError, Exception):
        if len(records) == 1:
            return [sys.exc_info()[1]]
    outputs = []
    for record in records:
        try:
            outputs.extend(stage.process([record]))
        except Exception as exc:  # noqa: BLE001 - any per-item failure becomes data
            outputs.append(exc)
    return outputs
