"""The local executor: batches computed one after another in this process (stages may use threads)."""

from __future__ import annotations

from typing import Any, Iterator

from ..stage import Stage, call_isolated
from . import Executor as Base


class Executor(Base):
    name = "local"

    def prepare(self, stage: Stage) -> None:
        stage.ensure_ready()

    def map(self, stage: Stage, batches: Iterator[list[dict[str, Any]]]) -> Iterator[list[Any]]:
        for records in batches:
            yield call_isolated(stage, records)
