"""Queries: raw items (a typed message, a screenshot, a voice note) cleaned and turned into features in
memory by the pipeline's own stage objects — the same ``process`` code a batch run uses, nothing copied.

A query is an ordinary manifest ``Item`` (``query_item`` builds one for files named on a command line or
uploaded to the server), so path confinement and the ``data.max_file_mb`` cap apply exactly as in a run.
Nothing is written to the cache. Each modality succeeds or fails on its own: an undecodable screenshot
leaves the message and the voice note usable, and the failure keeps the pipeline's error type
(``ImageDecodeError``, ``EmptyAudio``, ...) and message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.config import Config
from pipeline.errors import ItemError, describe
from pipeline.manifest import Item, resolve_path
from pipeline.runner import call_isolated
from pipeline.stage import STAGES, Stage, build_stage
from stages.fuse import MODALITIES

RAW_PREFIX = "raw:"


@dataclass
class Encoded:
    """One query's result: features and cleaned outputs per modality that worked, errors for the rest."""

    id: str
    features: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> feature vector
    cleaned: dict[str, dict[str, Any]] = field(default_factory=dict)  # modality -> cleaning stage output
    errors: dict[str, tuple[str, str]] = field(default_factory=dict)  # modality -> (error type, message)

    @property
    def missing(self) -> list[str]:
        return [m for m in MODALITIES if m not in self.features]


def query_item(
    query_id: str = "query",
    text: str = "",
    text_path: str = "",
    image: str = "",
    audio: str = "",
    base: str | None = None,
) -> Item:
    """An item for files given directly (a command-line argument, an upload in a private temp dir).

    Relative paths resolve against ``base`` (default: the current directory), which is also the root
    they must stay inside; absolute paths are the caller's explicit choice and are allowed.
    """
    base = os.path.abspath(base or os.getcwd())
    return Item(id=query_id, split="", label="", source="query", base=base, root=base, text=text,
                text_path=text_path, image=image, audio=audio)


def cleaning_stage(feature_stage: str) -> str:
    """The stage a feature stage reads (e.g. cnn -> clean_image)."""
    return STAGES[feature_stage].inputs[0]


def raw_input(modality: str) -> str:
    """The manifest column a modality is computed from: text, image or audio (speech -> audio, screen -> image)."""
    return STAGES[cleaning_stage(MODALITIES[modality])].inputs[0][len(RAW_PREFIX):]


class QueryEncoder:
    """Stage objects built once from a config (models load on first use, or in ``warm_up``)."""

    def __init__(self, config: Config, allow_outside_root: bool = False):
        self.config = config
        self.allow_outside = allow_outside_root or config["data"].allow_outside_root
        self.max_bytes = int(config["data"].max_file_mb * 1e6)
        self.stages: dict[str, Stage] = {}

    def stage(self, name: str) -> Stage:
        if name not in self.stages:
            self.stages[name] = build_stage(name, self.config)
        return self.stages[name]

    def warm_up(self, modalities: list[str] | None = None) -> None:
        """Load every model now (a server does this at start-up, not on its first request)."""
        for modality in modalities or list(MODALITIES):
            feature = MODALITIES[modality]
            self.stage(cleaning_stage(feature)).ensure_ready()
            self.stage(feature).ensure_ready()

    def encode(self, items: list[Item], modalities: list[str] | None = None) -> list[Encoded]:
        """Clean and featurize every item's modalities; one batch per stage, errors kept per item."""
        results = [Encoded(item.id) for item in items]
        done: dict[str, tuple[list, dict]] = {}  # cleaning stage -> (its outputs, its failures by item)
        for modality in modalities or list(MODALITIES):
            feature = MODALITIES[modality]
            cleaner = self.stage(cleaning_stage(feature))
            if cleaner.name in done:  # e.g. bert_speech and multilingual_speech: one transcription
                cleaned, failed = done[cleaner.name]
                for n, (kind, message) in failed.items():
                    results[n].errors[modality] = (kind, f"{modality}: {message}")
            else:
                cleaned = self._clean(cleaner, items, results, modality)
                done[cleaner.name] = (cleaned, {n: (r.errors[modality][0], r.errors[modality][1].removeprefix(modality + ": "))
                                                for n, r in enumerate(results) if modality in r.errors})
            for n, record in cleaned:
                results[n].cleaned[modality] = record
            inputs = [{"id": items[n].id, **record} for n, record in cleaned]
            for n, record in self._run(self.stage(feature), inputs, [n for n, _ in cleaned], results, modality):
                results[n].features[modality] = np.asarray(record[feature], dtype=np.float32)
        return results

    def _clean(self, cleaner: Stage, items: list[Item], results: list[Encoded], modality: str):
        raw = cleaner.inputs[0][len(RAW_PREFIX):]
        records, owners = [], []
        for n, item in enumerate(items):
            if not item.has(raw):
                continue
            try:
                records.append(self._raw_record(item, raw))
                owners.append(n)
            except ItemError as exc:
                results[n].errors[modality] = (exc.kind, f"{modality}: {exc}")
        return self._run(cleaner, records, owners, results, modality)

    def _raw_record(self, item: Item, raw: str) -> dict[str, Any]:
        if raw == "text" and item.text:
            return {"id": item.id, "text": item.text, "path": None}
        name = item.text_path if raw == "text" else getattr(item, raw)
        path, _, _ = resolve_path(item, name, self.allow_outside, self.max_bytes)
        return {"id": item.id, "text": None, "path": path}

    def _run(self, stage: Stage, records: list[dict], owners: list[int], results: list[Encoded], modality: str):
        """[(owner index, output record)] for the records that succeeded; failures go into ``results``."""
        if not records:
            return []
        stage.ensure_ready()
        done = []
        for n, out in zip(owners, call_isolated(stage, records)):
            if isinstance(out, BaseException):
                error, message, _ = describe(out)
                results[n].errors[modality] = (error, f"{modality}: {message}")
            else:
                done.append((n, out))
        return done
