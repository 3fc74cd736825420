"""Manifests: CSV or JSONL files listing items. Read, validate, and resolve raw paths safely.

Columns: ``id`` (required), ``split`` (train/val/test or empty), ``label``, ``text`` (inline) or
``text_path``, ``image``, ``audio`` (paths relative to the manifest's folder). Any modality may be
empty. Other columns are kept as metadata. Several files (or a folder of them) are read together and
ids must be unique across all of them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from . import fs
from .errors import ManifestError
from .paths import resolve_path  # noqa: F401  (re-exported: path confinement for manifest items)

SPLITS = ("train", "val", "test", "")
MODALITY_COLUMNS = ("text", "text_path", "image", "audio")
KNOWN = ("id", "split", "label") + MODALITY_COLUMNS
MAX_LISTED = 20


@dataclass(frozen=True)
class Item:
    id: str
    split: str
    label: str
    source: str  # "file:row" for messages
    base: str  # the manifest's folder (path or URI): relative paths resolve against it
    root: str  # the data root (path or URI) paths must stay inside
    text: str = ""
    text_path: str = ""
    image: str = ""
    audio: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def has(self, modality: str) -> bool:
        if modality == "text":
            return bool(self.text or self.text_path)
        return bool(getattr(self, modality))


@dataclass(frozen=True)
class RawInput:
    key: str
    text: str | None = None  # inline text
    path: str | None = None  # absolute path or URI of a raw file


def manifest_files(spec: str | list[str]) -> list[str]:
    names = spec if isinstance(spec, list) else [s for s in str(spec).replace(",", " ").split() if s]
    files: list[str] = []
    for name in names:
        if fs.is_uri(name):
            files.extend(_uri_manifests(name))
            continue
        p = Path(name)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix in (".csv", ".jsonl") and q.is_file())
            if not found:
                raise ManifestError(f"manifest folder {p} holds no .csv or .jsonl files")
            files.extend(str(f) for f in found)
        elif p.is_file():
            files.append(str(p))
        else:
            raise ManifestError(f"manifest not found: {p}")
    if not files:
        raise ManifestError("no manifest given")
    return files


def _uri_manifests(uri: str) -> list[str]:
    if uri.endswith((".csv", ".jsonl")):
        return [uri]
    import fsspec

    filesystem, base = fsspec.core.url_to_fs(uri)
    scheme = uri.split("://", 1)[0]
    found = sorted(p for p in filesystem.ls(base, detail=False) if p.endswith((".csv", ".jsonl")))
    if not found:
        raise ManifestError(f"manifest folder {uri} holds no .csv or .jsonl files")
    return [f"{scheme}://{p.lstrip('/')}" if scheme != "file" else f"file://{p}" for p in found]


def _text(path: str):
    import io

    return io.TextIOWrapper(fs.open_input(path), encoding="utf-8-sig", newline="")


def _rows(path: str) -> list[dict[str, str]]:
    try:
        if path.endswith(".jsonl"):
            rows = []
            with _text(path) as f:
                for n, line in enumerate(f, start=1):
                    if line.strip():
                        obj = json.loads(line)
                        if not isinstance(obj, dict):
                            raise ManifestError(f"{path}:{n}: each line must be a JSON object")
                        rows.append({k: "" if v is None else str(v) for k, v in obj.items()})
            return rows
        with _text(path) as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise ManifestError(f"{path}: empty manifest (no header row)")
            rows = []
            for row in reader:
                if None in row:
                    raise ManifestError(f"{path}:{reader.line_num}: more fields than the header has")
                rows.append({k: (v or "") for k, v in row.items()})
            return rows
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from None


def load(spec: str | list[str], data_root: str = "") -> list[Item]:
    items: list[Item] = []
    seen: dict[str, str] = {}
    problems: list[str] = []
    for path in manifest_files(spec):
        rows = _rows(path)
        columns = set(rows[0]) if rows else set()
        if rows and "id" not in columns:
            raise ManifestError(f"{path}: missing required column 'id' (has: {', '.join(sorted(columns))})")
        if rows and not columns & set(MODALITY_COLUMNS):
            raise ManifestError(f"{path}: no modality column; expected at least one of {', '.join(MODALITY_COLUMNS)}")
        base = _parent(path)
        root = (data_root.rstrip("/") if fs.is_uri(data_root) else str(Path(data_root).resolve())) if data_root else base
        first_row = 1 if path.endswith(".jsonl") else 2
        for n, row in enumerate(rows, start=first_row):
            where = f"{path}:{n}"
            item_id = row.get("id", "").strip()
            split = row.get("split", "").strip().lower()
            if not item_id:
                problems.append(f"{where}: empty id")
                continue
            if item_id in seen:
                problems.append(f"{where}: duplicate id {item_id!r} (first at {seen[item_id]})")
                continue
            if split not in SPLITS:
                problems.append(f"{where}: id {item_id!r} has unknown split {split!r} (use train, val, test or leave empty)")
                continue
            if row.get("text") and row.get("text_path"):
                problems.append(f"{where}: id {item_id!r} sets both text and text_path")
                continue
            seen[item_id] = where
            items.append(
                Item(
                    id=item_id,
                    split=split,
                    label=row.get("label", "").strip(),
                    source=where,
                    base=base,
                    root=root,
                    text=row.get("text", ""),
                    text_path=row.get("text_path", "").strip(),
                    image=row.get("image", "").strip(),
                    audio=row.get("audio", "").strip(),
                    meta={k: v for k, v in row.items() if k not in KNOWN},
                )
            )
    if problems:
        shown = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise ManifestError(f"{len(problems)} bad manifest row(s):\n  {shown}{more}")
    return items


def _parent(path: str) -> str:
    if fs.is_uri(path):
        return path.rsplit("/", 1)[0]
    return str(Path(path).resolve().parent)
