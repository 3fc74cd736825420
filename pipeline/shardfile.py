"""The shard file format: records <-> Parquet, plus the metadata that makes a shard self-describing.

Arrays are stored as flat Arrow lists plus a ``<field>.shape`` column, so pandas reads shards directly.
Each shard's Parquet metadata holds, under ``mmpipe``, a JSON object: ``format``, ``stage``,
``stage_digest``, ``schema`` (the stage's declared outputs), and per row, in row order, ``inputs`` (the
digests the row's key was derived from) and ``digests`` (the content digest of the row's output). That is
enough to rebuild the index from the shards alone (``mmp rebuild-index``).
"""

from __future__ import annotations

import io
import json
from typing import Any, Iterable

FORMAT = "mmpipe-shard/1"
META_KEY = b"mmpipe"
SHAPE = ".shape"


def encode(records: list[dict[str, Any]]):
    """Records (dicts of field -> ndarray | str | number) -> an Arrow table."""
    import numpy as np
    import pyarrow as pa

    columns: dict[str, Any] = {}
    for name in records[0]:
        values = [r[name] for r in records]
        if isinstance(values[0], np.ndarray):
            flat = np.concatenate([np.ascontiguousarray(v).reshape(-1) for v in values])
            offsets = np.zeros(len(values) + 1, dtype=np.int64)
            np.cumsum([v.size for v in values], out=offsets[1:])
            columns[name] = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat))
            columns[name + SHAPE] = pa.array([list(v.shape) for v in values], type=pa.list_(pa.int32()))
        else:
            columns[name] = pa.array(values)
    return pa.table(columns)


def decode_rows(table, rows: Iterable[int]) -> list[dict[str, Any]]:
    """Selected rows of a shard table -> records with arrays restored to their shapes."""
    rows = list(rows)
    sub = table.take(rows)
    out: list[dict[str, Any]] = [{} for _ in rows]
    names = [n for n in sub.column_names if not n.endswith(SHAPE)]
    for name in names:
        col = sub.column(name).combine_chunks()
        if name + SHAPE in sub.column_names:
            flat = col.values.to_numpy(zero_copy_only=False)
            offsets = col.offsets.to_numpy()
            shapes = sub.column(name + SHAPE).to_pylist()
            for i, shape in enumerate(shapes):
                out[i][name] = flat[offsets[i] - offsets[0] : offsets[i + 1] - offsets[0]].reshape(shape)
        else:
            for i, value in enumerate(col.to_pylist()):
                out[i][name] = value
    return out


def _parquet_options(table) -> dict[str, Any]:
    """Arrays of floats compress best split by byte; dictionaries only help the string columns."""
    import pyarrow as pa

    floats = [
        f"{f.name}.list.element"
        for f in table.schema
        if pa.types.is_large_list(f.type) and pa.types.is_floating(f.type.value_type)
    ]
    strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
    return {"compression": "zstd", "use_dictionary": strings, "use_byte_stream_split": floats or False}


def to_parquet(keys: list[str], records: list[dict[str, Any]], meta: dict[str, Any]) -> bytes:
    """One shard's bytes: a ``key`` column, the records' fields, and ``meta`` in the file's metadata."""
    import pyarrow.parquet as pq

    table = encode([{"key": k, **r} for k, r in zip(keys, records)])
    table = table.replace_schema_metadata({META_KEY: json.dumps({"format": FORMAT, **meta}).encode("utf-8")})
    buf = io.BytesIO()
    pq.write_table(table, buf, **_parquet_options(table))
    return buf.getvalue()


def read_meta(table) -> dict[str, Any]:
    """The ``mmpipe`` metadata of a shard table ({} for a shard written before shards described themselves)."""
    raw = (table.schema.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}
