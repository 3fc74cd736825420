"""The Ray engine: the same stage batch functions, run through Ray Data ``map_batches``.

Only the batches of missing keys are sent. Each Ray row carries one whole pipeline batch (Arrow IPC
bytes, no pickled data), so every batch keeps the same members as with the local engine and outputs are
identical. Model stages (``bert``, ``cnn``) run as actor pools that load the model once per actor;
decoding stages run as tasks. Results come back to the driver, which commits them into the same cache
shards under the same keys: local and Ray runs share one cache and resume each other's work.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

from .config import RayConfig
from .errors import ItemError, describe

MODEL_STAGES = ("bert", "cnn")




def to_ipc(records: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa

    from .store import encode

    if not records:
        return b""
    table = encode(records)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> list[dict[str, Any]]:
    import pyarrow as pa

    from .store import decode_rows

    if not data:
        return []
    table = pa.ipc.open_stream(pa.BufferReader(data)).read_all()
    return decode_rows(table, range(table.num_rows))


def run_batch(stage, payload: bytes) -> dict[str, Any]:
    """Worker side: decode a batch, run the stage (errors stay per item), encode outputs and errors."""
    from .runner import call_isolated

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

    def __init__(self, name: str, config: dict):
        from pipeline.config import Config
        from stages import STAGES

        self.stage = STAGES[name](Config.from_dict(config)[name])
        self.stage.ensure_ready()

    def __call__(self, batch):
        return _map(self.stage, batch)


_TASK_STAGES: dict[str, Any] = {}


def _task(batch, name: str, config: dict):
    from pipeline.config import Config
    from stages import STAGES

    key = json.dumps([name, config], sort_keys=True)
    if key not in _TASK_STAGES:  # a worker process reuses its stage across tasks
        _TASK_STAGES[key] = STAGES[name](Config.from_dict(config)[name])
        _TASK_STAGES[key].ensure_ready()
    return _map(_TASK_STAGES[key], batch)


def _map(stage, batch) -> dict[str, list]:
    out = {"index": [], "outputs": [], "errors": []}
    for index, payload in zip(batch["index"].to_pylist(), batch["payload"].to_pylist()):
        result = run_batch(stage, payload)
        out["index"].append(index)
        out["outputs"].append(result["outputs"])
        out["errors"].append(result["errors"])
    return out


class RayExecutor:
    def __init__(self, config):
        self.config = config
        self.cfg: RayConfig = config["ray"]

    def start(self) -> None:
        import ray

        if not ray.is_initialized():
            address = self.cfg.address or os.environ.get("RAY_ADDRESS") or None
            ray.init(address=address, num_cpus=None if address else (self.cfg.num_cpus or None),
                     include_dashboard=False, ignore_reinit_error=True, logging_level="ERROR", log_to_driver=False)
        import logging

        from ray.data import DataContext

        logging.getLogger("ray.data").setLevel(logging.ERROR)  # no per-dataset "execution finished" lines
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False

    def map(self, stage, batches: Iterator[list[dict[str, Any]]]) -> Iterator[list[Any]]:
        """Outputs for each batch, in order: dicts, or ItemErrors for items that failed."""
        import ray

        self.start()
        plain = self.config.to_dict()
        spec = {"actors": 1, "num_cpus": 1, "num_gpus": 0, **self.cfg.stages.get(stage.name, {})}
        window: list[list[dict[str, Any]]] = []
        for records in batches:
            window.append(records)
            if len(window) >= self.cfg.window:
                yield from self._round(ray, stage, plain, spec, window)
                window = []
        if window:
            yield from self._round(ray, stage, plain, spec, window)

    def _round(self, ray, stage, plain, spec, window) -> Iterator[list[Any]]:
        rows = [{"index": i, "payload": to_ipc(records)} for i, records in enumerate(window)]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        resources = {"num_cpus": spec["num_cpus"], "num_gpus": spec["num_gpus"]}
        if stage.name in MODEL_STAGES:
            ds = ds.map_batches(_StageActor, batch_size=1, batch_format="pyarrow", concurrency=int(spec["actors"]),
                                fn_constructor_kwargs={"name": stage.name, "config": plain}, **resources)
        else:
            ds = ds.map_batches(_task, batch_size=1, batch_format="pyarrow",
                                fn_kwargs={"name": stage.name, "config": plain}, **resources)
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
