"""Manifests: CSV or JSONL files listing items. Read, validate, and resolve raw paths safely.

CSV files may be comma-, semicolon-, tab- or |-separated (the header tells which), UTF-8 with or without
a BOM, with cells of any size.

Columns: ``id`` (required), ``split`` (train/val/test or empty), ``label``, ``text`` (inline) or
``text_path``, ``image``, ``audio`` (paths relative to the manifest's folder). Any modality may be
empty. Other columns are kept as metadata. Several files (or a folder of them) are read together and
ids must be unique across all of them.
"""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

from . import fs
from .errors import ManifestError
from .gcpause import without_gc
from .paths import resolve_path  # noqa: F401  (re-exported: path confinement for manifest items)

SPLITS = ("train", "val", "test", "")
SPLIT_NAMES = {s: s for s in SPLITS}  # one string per split, shared by all items (not one per row)
MODALITY_COLUMNS = ("text", "text_path", "image", "audio")
KNOWN = ("id", "split", "label") + MODALITY_COLUMNS
MAX_LISTED = 20
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "'|'"}
MAX_CELL = 2**31 - 1  # the csv module's default cell limit is 131,072 characters
READ_ERRORS = (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error)


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


class RawInput(NamedTuple):  # a tuple: one is made per item and raw input on every plan
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
    """The manifest as text: UTF-8 (a BOM is dropped), or UTF-16 when it starts with a UTF-16 byte-order
    mark (what Excel's "Unicode Text" export writes)."""
    import io

    raw = fs.open_input(path)
    buffered = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
    encoding = "utf-16" if buffered.peek(2)[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    return io.TextIOWrapper(buffered, encoding=encoding, newline="")


def _delimiter(header: str) -> str:
    """The delimiter that splits the header into the most known column names (comma on a tie)."""
    known = set(KNOWN)

    def score(delimiter: str) -> int:
        return len({name.strip() for name in next(csv.reader([header], delimiter=delimiter), [])} & known)

    return max(DELIMITERS, key=score)  # max keeps the first of equals: comma


def _csv_rows(path: str, f) -> tuple[list[str], Iterator[list[str]]]:
    """(columns, the rows: read as they are consumed)."""
    # A cell may be any size (a long e-mail pasted inline): the stages cap or refuse it per item.
    csv.field_size_limit(MAX_CELL)
    header = f.readline()
    if not header.strip():
        raise ManifestError(f"{path}: empty manifest (no header row)")
    delimiter = _delimiter(header)
    reader = csv.reader(itertools.chain([header], f), delimiter=delimiter)
    columns = [name.strip() for name in next(reader)]
    if "id" not in columns:
        raise ManifestError(
            f"{path}: missing required column 'id' (has: {', '.join(columns)}; split by "
            f"{DELIMITERS[delimiter]}, the delimiter matching the most known column names; comma, semicolon, tab "
            "and | are recognised)"
        )

    def rows() -> Iterator[list[str]]:
        width = len(columns)
        for values in reader:
            if len(values) != width:
                if not values:
                    continue  # a blank line
                if len(values) > width:
                    raise ManifestError(f"{path}:{reader.line_num}: more fields than the header has "
                                        f"(delimiter: {DELIMITERS[delimiter]})")
                values += [""] * (width - len(values))
            yield values

    return columns, rows()


def _jsonl_rows(path: str, f) -> tuple[list[str], list[list[str]], list[dict[str, str]]]:
    objects = []
    for n, line in enumerate(f, start=1):
        if line.strip():
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ManifestError(f"{path}:{n}: each line must be a JSON object")
            objects.append({k: "" if v is None else str(v) for k, v in obj.items()})
    columns = list(dict.fromkeys(k for obj in objects for k in obj))
    return columns, [[obj.get(c, "") for c in columns] for obj in objects], objects


def _rows(path: str) -> tuple[list[str], Iterator[list[str]], list[dict[str, str]] | None]:
    """(columns, rows as lists in column order, and for JSONL each row's own fields). CSV rows are read as
    they are consumed (a large manifest is never held twice), and the file is closed when they are."""
    try:
        f = _text(path)
        try:
            if path.endswith(".jsonl"):
                with f:
                    columns, rows, objects = _jsonl_rows(path, f)
                return columns, iter(rows), objects
            columns, rows = _csv_rows(path, f)
        except BaseException:
            f.close()
            raise
    except READ_ERRORS as exc:
        raise _unreadable(path, exc) from None
    return columns, _closing(path, f, rows), None


def _closing(path: str, f, rows: Iterator[list[str]]) -> Iterator[list[str]]:
    with f:
        try:
            yield from rows
        except READ_ERRORS as exc:
            raise _unreadable(path, exc) from None


def _unreadable(path: str, exc: Exception) -> ManifestError:
    if isinstance(exc, UnicodeDecodeError) and exc.encoding.startswith("utf-16"):
        return ManifestError(f"cannot read manifest {path}: it starts with a UTF-16 byte-order mark but is not valid "
                             f"UTF-16 ({exc.reason})")
    if isinstance(exc, UnicodeDecodeError):
        return ManifestError(f"cannot read manifest {path}: it is not UTF-8 (byte 0x{exc.object[exc.start]:02x}: {exc.reason}); "
                             "save it as UTF-8 (Excel: \"CSV UTF-8\"), or as UTF-16 with a byte-order mark")
    return ManifestError(f"cannot read manifest {path}: {exc}")


@without_gc
def load(spec: str | list[str], data_root: str = "") -> list[Item]:
    items: list[Item] = []
    seen: dict[str, Item] = {}
    problems: list[str] = []
    for path in manifest_files(spec):
        columns, rows, objects = _rows(path)
        first = next(rows, None)
        if first is None:
            continue  # a header only
        if "id" not in columns:
            raise ManifestError(f"{path}: missing required column 'id' (has: {', '.join(sorted(columns))})")
        if not set(columns) & set(MODALITY_COLUMNS):
            for _ in rows:  # a malformed row further down is reported first, as ever
                pass
            raise ManifestError(f"{path}: no modality column; expected at least one of {', '.join(MODALITY_COLUMNS)}")
        base = _parent(path)
        root = (data_root.rstrip("/") if fs.is_uri(data_root) else str(Path(data_root).resolve())) if data_root else base
        first_row = 1 if objects is not None else 2
        extra = [(c, i) for i, c in enumerate(columns) if c not in KNOWN]  # kept as metadata
        # Where each known column is; a missing one points just past the row, at the "" appended below.
        at = {c: columns.index(c) if c in columns else len(columns) for c in KNOWN}
        i_id, i_split, i_label, i_text, i_path, i_image, i_audio = (at[c] for c in KNOWN)
        for n, values in enumerate(itertools.chain([first], rows), start=first_row):
            values.append("")
            item_id, split = values[i_id].strip(), values[i_split].strip().lower()
            text, text_path = values[i_text], values[i_path].strip()
            known_split = SPLIT_NAMES.get(split)
            if not item_id or item_id in seen or known_split is None or (text and text_path):
                problems.append(_problem(f"{path}:{n}", item_id, split, text, text_path, seen))
                continue
            if objects is not None:
                meta = {k: v for k, v in objects[n - first_row].items() if k not in KNOWN}
            else:
                meta = {c: values[i] for c, i in extra} if extra else {}
            item = Item(item_id, known_split, values[i_label].strip(), f"{path}:{n}", base, root, text, text_path,
                        values[i_image].strip(), values[i_audio].strip(), meta)
            seen[item_id] = item
            items.append(item)
    if problems:
        shown = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise ManifestError(f"{len(problems)} bad manifest row(s):\n  {shown}{more}")
    return items


def _problem(where: str, item_id: str, split: str, text: str, text_path: str, seen: dict[str, Item]) -> str:
    if not item_id:
        return f"{where}: empty id"
    if item_id in seen:
        return f"{where}: duplicate id {item_id!r} (first at {seen[item_id].source})"
    if split not in SPLITS:
        return f"{where}: id {item_id!r} has unknown split {split!r} (use train, val, test or leave empty)"
    return f"{where}: id {item_id!r} sets both text and text_path"


def _parent(path: str) -> str:
    if fs.is_uri(path):
        return path.rsplit("/", 1)[0]
    return str(Path(path).resolve().parent)
