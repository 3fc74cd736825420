"""Export one stage's outputs for a manifest's items as a Parquet file (id + output fields)."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError
from .manifest import Item

BATCH = 1024


def export(ws, stage: str, items: list[Item], out: Path) -> tuple[int, int]:
    """Returns (rows written, items without output). Streams in bounded batches."""
    import pyarrow.parquet as pq

    from .stage import stage_class
    from .store import encode

    if not stage_class(stage).per_item_rows:
        raise ConfigError(f"stage {stage!r} keeps no per-item rows to export; its output is a folder under the work directory")
    keys = [p for p in ws.plan([stage], items, dry=True)][-1].keys
    committed = ws.store.committed(stage)
    pairs = [(i, k) for i, k in keys.items() if k in committed]
    missing = len(items) - len(pairs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer = None
    try:
        for start in range(0, len(pairs), BATCH):
            chunk = pairs[start : start + BATCH]
            records = ws.store.read(stage, [k for _, k in chunk])
            table = encode([{"id": i, "key": k, **records[k]} for i, k in chunk])
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table)
        if writer is None:
            import pyarrow as pa

            pq.write_table(pa.table({"id": pa.array([], pa.string())}), tmp)
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(out)
    return len(pairs), missing
