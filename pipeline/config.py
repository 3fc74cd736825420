"""Configuration: one dataclass per section, defaults in code, a TOML file on top, CLI overrides last.

Unknown sections or keys are refused with a "did you mean" hint; a setting renamed since (a section's
``RENAMED``: old name -> new name and values, e.g. ``bert.dtype = "float32"`` -> ``precision = "fp32"``) is
read under its new name, so older config files and trained models' ``config.json`` still load. Fields marked ``execution_only``
(batch sizes, threads) change how a stage runs, never what it outputs, so they stay out of cache keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .engines import ENGINES  # executor names only; an executor's module loads when it is chosen


def execution_only(default: Any) -> Any:
    """A field that does not change outputs (kept out of cache keys)."""
    return field(default=default, metadata={"execution_only": True})


@dataclass
class DataConfig:
    # Folder or URI (s3://, gs://, file://) that manifest paths must stay inside; "" = each manifest's folder.
    root: str = ""
    # Let manifests point outside the data root (absolute paths, "..", symlinks). Off by default.
    allow_outside_root: bool = False
    # Refuse raw files larger than this before reading them.
    max_file_mb: float = 200.0


@dataclass
class CacheConfig:
    # Where shards live: "" = WORKDIR/cache, or a folder or URI (s3://bucket/cache, gs://..., file://...).
    # The index (SQLite) and the run lock always stay in WORKDIR on a local disk.
    root: str = ""
    # A shard is committed when it holds this many rows, this many MB, or after this many seconds
    # (the most work a crash can lose).
    shard_rows: int = 1024
    shard_mb: float = 32.0
    flush_seconds: float = 30.0


@dataclass
class RunConfig:
    # Seconds a run waits for another run on the same work directory before giving up.
    lock_timeout: float = 10.0
    # Retry items whose failure is permanent for their key (corrupt input) on every run.
    retry_permanent_failures: bool = False
    # local | ray: the executor that runs per-item stages (pipeline/executors/)
    engine: str = "local"

    def validate(self) -> str | None:
        if self.engine not in ENGINES:
            return f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}"
        if self.lock_timeout < 0:
            return "lock_timeout must be >= 0"
        return None


@dataclass
class RayConfig:
    # Cluster address ("auto", "ray://host:10001"); empty = $RAY_ADDRESS, else start a local Ray.
    address: str = ""
    # CPUs for a local Ray started by the pipeline (0 = all).
    num_cpus: int = 0
    # Times a lost worker is replaced and its jobs redone (actor restarts, task retries); -1 = no limit.
    retries: int = 3
    # Seconds a model stage waits for its whole actor pool to start (models loaded) before it fails.
    start_timeout: float = 600.0
    # Per-stage resources: {stage = {actors = N, num_cpus = C, num_gpus = G}}; actors only for model stages.
    stages: dict = field(default_factory=lambda: {
        "bert": {"actors": 1, "num_cpus": 1, "num_gpus": 0},
        "cnn": {"actors": 1, "num_cpus": 1, "num_gpus": 0},
    })

    def validate(self) -> str | None:
        for name, spec in self.stages.items():
            unknown = set(spec) - {"actors", "num_cpus", "num_gpus"}
            if unknown:
                return f"stages.{name}: unknown keys {sorted(unknown)} (use actors, num_cpus, num_gpus)"
            actors = spec.get("actors", 1)
            if not isinstance(actors, int) or isinstance(actors, bool) or actors < 1:
                return f"stages.{name}.actors must be an integer >= 1, not {actors!r}"
            for key in ("num_cpus", "num_gpus"):
                value = spec.get(key, 0)
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                    return f"stages.{name}.{key} must be a number >= 0, not {value!r}"
        if self.retries < -1:
            return "retries must be -1 (no limit) or more"
        if self.start_timeout < 1:
            return "start_timeout must be at least 1 second"
        return None




# Every config section: the global ones here, plus each stage's Config, added when the stage registers
# (``pipeline.stage.register``). The core never imports a stage module to learn them.
SECTIONS: dict[str, type] = {"data": DataConfig, "cache": CacheConfig, "run": RunConfig, "ray": RayConfig}


def register_section(name: str, section_type: type) -> None:
    known = SECTIONS.get(name)
    if known is not None and known is not section_type:
        raise ValueError(f"config section [{name}] registered twice ({known.__name__}, {section_type.__name__})")
    SECTIONS[name] = section_type


def _hint(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(options))})"


def _coerce(section: str, name: str, value: Any, annotation: Any) -> Any:
    kind = typing.get_origin(annotation) or annotation
    where = f"{section}.{name}"
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind in (list, tuple):
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
    else:
        return value
    raise ConfigError(f"config {where}: expected {getattr(kind, '__name__', kind)}, got {value!r}")


def _merged(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class Config:
    """All sections, validated. ``config[name]`` is a section's dataclass instance."""

    def __init__(self, sections: dict[str, Any]):
        self.sections = sections

    def __getitem__(self, name: str) -> Any:
        return self.sections[name]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(obj) for name, obj in self.sections.items()}

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> "Config":
        raw: dict[str, dict[str, Any]] = {}
        if path:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"config file not found: {p}")
            try:
                raw = tomllib.loads(p.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        for item in overrides or []:
            if "=" not in item or "." not in item.split("=", 1)[0]:
                raise ConfigError(f"override {item!r}: expected SECTION.KEY=VALUE, e.g. mfcc.n_mfcc=20")
            dotted, text = item.split("=", 1)
            section, *path = dotted.strip().split(".")
            try:
                value = tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                value = text
            target = raw.setdefault(section, {})
            for part in path[:-1]:  # ray.stages.bert.actors=2: into a table-valued setting
                target = target.setdefault(part, {})
            target[path[-1]] = value
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, dict[str, Any]]) -> "Config":
        types = dict(SECTIONS)
        for section in raw:
            if section not in types:
                raise ConfigError(f"unknown config section [{section}]" + _hint(section, list(types)))
        sections = {}
        for name, section_type in types.items():
            given = raw.get(name, {})
            if not isinstance(given, dict):
                raise ConfigError(f"config [{name}] must be a table of settings")
            fields = {f.name: f for f in dataclasses.fields(section_type)}
            hints = typing.get_type_hints(section_type)
            values = {}
            for key, value in given.items():
                if key not in fields and key in getattr(section_type, "RENAMED", {}):
                    key, values_then = section_type.RENAMED[key]  # a config (or a model's config.json) of before
                    value = values_then.get(value, value) if isinstance(value, str) else value
                if key not in fields:
                    raise ConfigError(f"unknown config key {name}.{key}" + _hint(key, list(fields)))
                if isinstance(value, dict) and typing.get_origin(hints[key]) is None and hints[key] is dict:
                    value = _merged(getattr(section_type(), key), value)  # a partial table keeps the defaults
                values[key] = _coerce(name, key, value, hints[key])
            obj = section_type(**values)
            check = getattr(obj, "validate", None)
            if check:
                problem = check()
                if problem:
                    raise ConfigError(f"config [{name}]: {problem}")
            sections[name] = obj
        return cls(sections)


def key_fields(section: Any) -> dict[str, Any]:
    """The settings of a stage config that shape its outputs (and so belong in cache keys)."""
    return {
        f.name: getattr(section, f.name)
        for f in dataclasses.fields(section)
        if not f.metadata.get("execution_only")
    }
