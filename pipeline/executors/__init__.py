"""Executors: how the batches of one per-item stage get computed. One interface, chosen by name
(``run.engine``):

    executor.prepare(stage)              # before the first batch (load the model, start a cluster)
    executor.map(stage, batches)         # an iterator of outputs, one list per batch, in batch order
    executor.facts                       # what the run report should say about it (e.g. engine=ray)

Outputs are dicts of fields or exceptions (per-item failures), exactly as ``Stage.process`` returns
them. The runner plans, reads inputs, checks and commits outputs; an executor only computes. Which
stages get a long-lived worker is the stage's own ``holds_model`` attribute.

An executor whose workers read their own inputs and write their own shards (``writes_shards = True``,
e.g. Ray across machines) implements ``slots(stage)`` and ``run_jobs(stage, jobs, shard_root)`` instead
of ``map``: the runner hands it job descriptors and only commits what comes back (``pipeline.jobs``).

This module imports nothing heavy; the names live in ``pipeline.engines`` (which ``pipeline.config`` reads
to validate ``run.engine``, so config never imports this package); an executor's module is imported only
when it is chosen.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Iterator

from ..engines import ENGINES  # name -> module defining ``Executor``

if TYPE_CHECKING:
    from ..config import Config
    from ..stage import Stage



class Executor:
    name = "base"
    writes_shards = False

    def __init__(self, config: "Config"):
        self.config = config

    @property
    def facts(self) -> dict[str, Any]:
        return {}

    def prepare(self, stage: "Stage") -> None:
        """Make the stage ready to compute (an exception here is a stage error: the other stages run)."""

    def map(self, stage: "Stage", batches: Iterator[list[dict[str, Any]]]) -> Iterator[list[Any]]:
        raise NotImplementedError


def get_executor(name: str, config: "Config") -> Executor:
    if name not in ENGINES:
        from ..errors import ConfigError

        raise ConfigError(f"unknown engine {name!r}; engines: {', '.join(ENGINES)}")
    module = importlib.import_module(ENGINES[name])
    return module.Executor(config)
