"""Jobs: stage work a worker does end to end, so that bulk data never passes through the driver.

A job is a run of consecutive batches of one stage — the runner's fixed batches, members exactly as
the local engine computes them — described in plain JSON: for every key its item id and where its input
lives (inline text or a raw file path or URI; or an upstream shard's name, checksum and row). A worker
(any process that reaches the raw data and ``cache.root``):

1. reads the inputs itself (raw files through ``pipeline.fs``, upstream shards from ``cache.root``,
   each checked against the checksum the driver's index holds),
2. computes each batch with ``call_isolated`` (one bad item fails alone),
3. checks each output against the stage's declared outputs and writes them as shards in exactly the
   store's format (``shardfile.to_parquet``, self-describing; temp file, fsync, rename), cut at the same
   ``cache.shard_rows`` / ``shard_mb`` / ``flush_seconds`` thresholds and only between batches,

and returns only (shard name, checksum, size, keys, output digests) per shard and (key, error, message,
permanent) per failed item. The driver commits each shard into its index (``Store.adopt_shard``); a shard
whose job is never committed is an orphan that the next run's ``Store.remove_debris`` deletes.
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from typing import Any

from .errors import OutputMismatch, describe
from .fs import Folder, is_uri
from .keys import digest_bytes, digest_record
from .outputs import check_record
from .plan import RAW_PREFIX, StagePlan
from .shardfile import decode_rows, to_parquet

# ---- the driver side: describing jobs ------------------------------------------------------------


def batches_per_job(batch_size: int, n_batches: int, slots: int, shard_rows: int) -> int:
    """About one shard's worth of rows per job, but at least four jobs per worker slot so that every
    slot has work and a lost worker loses little."""
    fill = max(1, shard_rows // max(1, batch_size))
    spread = max(1, math.ceil(n_batches / (4 * max(1, slots))))
    return min(fill, spread)


def describe_jobs(plan: StagePlan, batches: list[list[str]], ids_by_key: dict[str, list[str]], store, per_job: int) -> list[dict]:
    """JSON-ready job descriptors for ``batches`` (lists of keys), ``per_job`` batches each."""
    source = plan.stage.inputs[0]
    upstream = not source.startswith(RAW_PREFIX)
    where: dict[str, tuple[str, int]] = {}
    sums: dict[str, str] = {}
    if upstream:
        where = store.locations(source, [plan.payload[k][0] for b in batches for k in b])
        sums = store.checksums(source)
    jobs = []
    for start in range(0, len(batches), per_job):
        shards: dict[str, int] = {}
        described = []
        for keys in batches[start : start + per_job]:
            batch = []
            for key in keys:
                entry: dict[str, Any] = {"key": key, "id": ids_by_key[key][0], "inputs": plan.input_digests[key]}
                if upstream:
                    shard, row = where[plan.payload[key][0]]
                    entry["shard"], entry["row"] = shards.setdefault(shard, len(shards)), row
                else:
                    ref = plan.payload[key]
                    entry["text"], entry["path"] = ref.text, ref.path
                batch.append(entry)
            described.append(batch)
        jobs.append({"job": len(jobs), "source": source, "stage_digest": plan.stage.digest(),
                     "shards": [[s, sums[s]] for s in shards], "batches": described})
    return jobs


def shard_root(store) -> str:
    """The shard folder as every process must name it (an absolute path or a URI)."""
    root = store.shards.root
    return root if is_uri(root) else os.path.abspath(root)


# ---- the worker side: doing a job -----------------------------------------------------------------


class CorruptShard(Exception):
    """An upstream shard is missing or fails its checksum; the driver drops it and replans."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class ShardReader:
    """Upstream shards by name, each checked against its checksum; the last two stay parsed."""

    def __init__(self, folder: Folder):
        self.folder = folder
        self.tables: OrderedDict[str, Any] = OrderedDict()

    def table(self, name: str, checksum: str):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if name not in self.tables:
            try:
                data = self.folder.read(name)
            except FileNotFoundError:
                data = b""
            if digest_bytes(data) != checksum:
                raise CorruptShard(name)
            self.tables[name] = pq.read_table(pa.BufferReader(data))
            while len(self.tables) > 2:
                self.tables.popitem(last=False)
        self.tables.move_to_end(name)
        return self.tables[name]

    def records(self, job: dict, batch: list[dict]) -> list[dict[str, Any]]:
        if job["source"].startswith(RAW_PREFIX):
            return [{"id": e["id"], "text": e["text"], "path": e["path"]} for e in batch]
        by_shard: dict[int, list[int]] = {}
        for i, entry in enumerate(batch):
            by_shard.setdefault(entry["shard"], []).append(i)
        out: list[dict[str, Any]] = [{} for _ in batch]
        for shard, positions in by_shard.items():  # one decode per shard, not per row
            table = self.table(*job["shards"][shard])
            for i, record in zip(positions, decode_rows(table, [batch[i]["row"] for i in positions])):
                record.pop("key", None)
                out[i] = {"id": batch[i]["id"], **record}
        return out


class ShardWriter:
    """What ``ShardBuffer`` commits to on a worker: the shard file only, remembered for the driver."""

    def __init__(self, folder: Folder):
        self.folder = folder
        self.written: list[dict[str, Any]] = []

    def commit_shard(self, stage: str, keys: list[str], records: list[dict[str, Any]], meta: dict | None = None) -> str:
        digests = [digest_record(r) for r in records]  # what downstream keys derive from
        data = to_parquet(keys, records, {"stage": stage, **(meta or {}), "digests": digests})
        checksum = digest_bytes(data)
        name = f"{stage}/{checksum}.parquet"
        self.folder.write_atomic(name, data, f".{os.getpid()}.tmp")
        self.written.append({"name": name, "checksum": checksum, "bytes": len(data), "keys": list(keys), "digests": digests})
        return name


def run_job(stage, job: dict, reader: ShardReader, cache: Any) -> dict[str, Any]:
    """Do one job (see the module docstring). ``reader`` lives as long as the worker, so consecutive jobs
    reuse the upstream shard they share; ``cache`` is the run's ``CacheConfig``."""
    from .buffer import ShardBuffer
    from .stage import call_isolated

    started = time.time()
    writer = ShardWriter(reader.folder)
    spec = stage.output_spec()
    buffer = ShardBuffer(writer, stage.name, {"cache": cache}, job["stage_digest"], spec)
    errors: list[list[Any]] = []
    try:
        for batch in job["batches"]:
            outputs = call_isolated(stage, reader.records(job, batch))
            for entry, out in zip(batch, outputs):
                problem = None if isinstance(out, BaseException) else check_record(spec, out)
                if problem:
                    out = OutputMismatch(f"stage {stage.name} broke its declared outputs: {problem}")
                if isinstance(out, BaseException):
                    errors.append([entry["key"], *describe(out)])
                else:
                    buffer.add(entry["key"], out, entry["inputs"])
            buffer.maybe_flush()
        buffer.flush()
    except CorruptShard as exc:
        return {"job": job["job"], "corrupt": exc.name, "shards": [], "errors": []}
    return {"job": job["job"], "shards": writer.written, "errors": errors, "started": started, "finished": time.time()}


# ---- the driver side: committing what workers did -------------------------------------------------


def compute_jobs(store, plan: StagePlan, batches: list[list[str]], ids_by_key: dict[str, list[str]], report,
                 executor, downstream: list[str], shard_rows: int) -> None:
    """Run a stage's pending batches as jobs on ``executor`` and commit each job's shards and failures
    once (a repeated result of a retried job is ignored). A job that cannot start (its model cannot
    load) or an engine failure ends this stage as a stage error, keeping what was committed."""
    from .errors import CacheCorruptError, PipelineError

    stage = plan.stage
    stats = report.stage(stage.name)
    per_job = batches_per_job(stage.batch_size, len(batches), executor.slots(stage), shard_rows)
    jobs = describe_jobs(plan, batches, ids_by_key, store, per_job)
    bar = report.progress(stage.name, sum(len(ids_by_key[k]) for b in batches for k in b))
    committed: set[int] = set()
    results = executor.run_jobs(stage, jobs, shard_root(store))
    try:
        while True:
            try:
                result = next(results, None)
            except (PipelineError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. retries exhausted after losing workers
                report.stage_error(stage.name, f"{type(exc).__name__}: {exc}", downstream)
                return
            if result is None:
                break
            if result["job"] in committed:
                continue
            if result.get("setup_error"):
                report.stage_error(stage.name, result["setup_error"], downstream)
                return
            if result.get("corrupt"):
                dropped = store.drop_shard(result["corrupt"])
                raise CacheCorruptError(f"cache shard {result['corrupt']} is missing or fails its checksum; dropped its "
                                        f"{dropped} entries of stage '{plan.stage.inputs[0]}' so they are recomputed")
            for shard in result["shards"]:
                entries = list(zip(shard["keys"], shard["digests"]))
                store.adopt_shard(stage.name, shard["name"], shard["checksum"], entries, shard["bytes"])
                stats["computed"] += sum(len(ids_by_key[k]) for k in shard["keys"])
                bar.update(sum(len(ids_by_key[k]) for k in shard["keys"]))
            failed = []
            for key, error, message, permanent in result["errors"]:
                for item_id in ids_by_key[key]:
                    report.fail(stage.name, item_id, error, f"item {item_id}: {message}")
                failed.append((key, ids_by_key[key][0], error, message, permanent))
                bar.update(len(ids_by_key[key]))
            store.record_failures(stage.name, failed)
            committed.add(result["job"])
    finally:
        bar.close()
        results.close()
