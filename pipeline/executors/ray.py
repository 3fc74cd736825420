"""The Ray executor: the same stage batch functions, run through Ray Data ``map_batches``.

Only the batches of missing keys are sent. Each Ray row carries one whole pipeline batch (Arrow IPC
bytes, no pickled data), so every batch keeps the same members as with the local executor and outputs
are identical. Stages that hold a model (``Stage.holds_model``) run as actor pools that load it once per
actor; the others run as tasks. Workers get the stage class (by reference: its module is imported
there) and its config section; results come back to the driver, which checks and commits them into the
same cache: local and Ray runs share one cache and resume each other's work.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterator

from ..errors import ItemError, describe
from ..keys import canonical_json
from ..stage import Stage, call_isolated
from . import Executor as Base


def to_ipc(records: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa

    from ..store import encode

    if not records:
        return b""
    table = encode(records)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> list[dict[str, Any]]:
    import pyarrow as pa

    from ..store import decode_rows

    if not data:
        return []
    table = pa.ipc.open_stream(pa.BufferReader(data)).read_all()
    return decode_rows(table, range(table.num_rows))


def run_batch(stage: Stage, payload: bytes) -> dict[str, Any]:
    """Worker side: decode a batch, run the stage (errors stay per item), encode outputs and errors."""
    records = from_ipc(payload)
    outputs = call_isolated(stage, records)
    ok, errors = [], {}
    for i, out in enumerate(outputs):
        if isinstance(out, BaseException):
            errors[i] = describe(out)
        else:
            ok.append(out)
    return {"outputs": to_ipc(ok), "errors": json.dumps(errors)}


class _StageActor:
    """One model per actor, loaded once."""

    def __init__(self, cls: type[Stage], section: Any):
        self.stage = cls(section)
        self.stage.ensure_ready()

    def __call__(self, batch):
        return _map(self.stage, batch)


_TASK_STAGES: dict[str, Stage] = {}


def _task(batch, cls: type[Stage], section: Any):
    key = canonical_json([cls.__module__, cls.__qualname__, dataclasses.asdict(section)])
    if key not in _TASK_STAGES:  # a worker process reuses its stage across tasks
        _TASK_STAGES[key] = cls(section)
        _TASK_STAGES[key].ensure_ready()
    return _map(_TASK_STAGES[key], batch)


def _map(stage: Stage, batch) -> dict[str, list]:
    out = {"index": [], "outputs": [], "errors": []}
    for index, payload in zip(batch["index"].to_pylist(), batch["payload"].to_pylist()):
        result = run_batch(stage, payload)
        out["index"].append(index)
        out["outputs"].append(result["outputs"])
        out["errors"].append(result["errors"])
    return out


class Executor(Base):
    name = "ray"

    def __init__(self, config):
        super().__init__(config)
        self.cfg = config["ray"]

    @property
    def facts(self) -> dict[str, Any]:
        return {"engine": "ray"}

    def prepare(self, stage: Stage) -> None:
        """Start (or connect to) Ray; the stage itself is set up on the workers."""
        import logging

        import ray
        from ray.data import DataContext

        if not ray.is_initialized():
            address = self.cfg.address or os.environ.get("RAY_ADDRESS") or None
            ray.init(address=address, num_cpus=None if address else (self.cfg.num_cpus or None),
                     include_dashboard=False, ignore_reinit_error=True, logging_level="ERROR", log_to_driver=False)
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # no per-dataset "execution finished" lines
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False

    def map(self, stage: Stage, batches: Iterator[list[dict[str, Any]]]) -> Iterator[list[Any]]:
        """Outputs for each batch, in order: dicts, or ItemErrors for items that failed."""
        import ray

        spec = {"actors": 1, "num_cpus": 1, "num_gpus": 0, **self.cfg.stages.get(stage.name, {})}
        window: list[list[dict[str, Any]]] = []
        for records in batches:
            window.append(records)
            if len(window) >= self.cfg.window:
                yield from self._round(ray, stage, spec, window)
                window = []
        if window:
            yield from self._round(ray, stage, spec, window)

    def _round(self, ray, stage: Stage, spec, window) -> Iterator[list[Any]]:
        rows = [{"index": i, "payload": to_ipc(records)} for i, records in enumerate(window)]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        resources = {"num_cpus": spec["num_cpus"], "num_gpus": spec["num_gpus"]}
        args = {"cls": type(stage), "section": stage.config}
        if stage.holds_model:
            ds = ds.map_batches(_StageActor, batch_size=1, batch_format="pyarrow", concurrency=int(spec["actors"]),
                                fn_constructor_kwargs=args, **resources)
        else:
            ds = ds.map_batches(_task, batch_size=1, batch_format="pyarrow", fn_kwargs=args, **resources)
        results = sorted(ds.take_all(), key=lambda r: r["index"])
        for records, result in zip(window, results):
            ok = iter(from_ipc(result["outputs"]))
            errors = {int(k): v for k, v in json.loads(result["errors"]).items()}
            outputs: list[Any] = []
            for i in range(len(records)):
                if i in errors:
                    kind, message, permanent = errors[i]
                    outputs.append(RemoteItemError(kind, message, permanent))
                else:
                    outputs.append(next(ok))
            yield outputs


class RemoteItemError(ItemError):
    """An item error raised on a Ray worker, carried back by type name and message."""

    def __init__(self, kind: str, message: str, permanent: bool):
        super().__init__(message)
        self._kind, self.permanent = kind, permanent

    @property
    def kind(self) -> str:
        return self._kind
