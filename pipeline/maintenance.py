"""Cache maintenance: ``gc`` (drop what no manifest + config references, compact shards) and
``rebuild_index`` (recreate ``index.sqlite`` from the self-describing shards alone).

A rebuilt index knows every committed row of every readable shard, with its output digest; it does not
know failures (those items are simply computed again) nor the last planned keys that ``status`` uses
to explain changes. Shards that fail their checksum, or were written before shards described
themselves, are left out (the next run deletes them as debris and recomputes their items).
"""

from __future__ import annotations

from typing import Any

from .keys import digest_bytes
from .shardfile import FORMAT, read_meta
from .store import Store


def gc(store: Store, live: dict[str, set[str]]) -> dict[str, int]:
    """Keep only entries whose (stage, key) is live; compact shards; delete what is unused."""
    db = store.db
    stats = {"entries": 0, "shards": 0, "failures": 0, "bytes": 0}
    for stage, keys in db.execute("SELECT stage, group_concat(key) FROM entries GROUP BY stage").fetchall():
        dead = set(keys.split(",")) - live.get(stage, set())
        if dead:
            with db:
                db.executemany("DELETE FROM entries WHERE stage = ? AND key = ?", [(stage, k) for k in dead])
            stats["entries"] += len(dead)
    store.refresh()
    for stage, key in db.execute("SELECT stage, key FROM failures").fetchall():
        if key not in live.get(stage, set()):
            with db:
                db.execute("DELETE FROM failures WHERE stage = ? AND key = ?", (stage, key))
            stats["failures"] += 1
    shards = db.execute(
        "SELECT s.name, s.stage, s.rows, s.bytes, count(e.key) FROM shards s LEFT JOIN entries e ON e.shard = s.name "
        "GROUP BY s.name"
    ).fetchall()
    for name, stage, rows, size, used in shards:
        if used == rows:
            continue
        kept = db.execute("SELECT key, row FROM entries WHERE shard = ? ORDER BY row", (name,)).fetchall()
        if kept:
            keys = [k for k, _ in kept]
            records = store.read(stage, keys)
            meta = read_meta(store.table(name))
            inputs = meta.get("inputs")
            store.commit_shard(stage, keys, [records[k] for k in keys], {
                "stage_digest": meta.get("stage_digest", ""), "schema": meta.get("schema", {}),
                "inputs": [inputs[row] for _, row in kept] if inputs else [""] * len(keys),
            })
        store.drop_shard(name)
        stats["shards"] += 1
        stats["bytes"] += size
    stats["debris"] = store.remove_debris()
    with db:
        stages = [s for (s,) in db.execute("SELECT DISTINCT stage FROM latest")]
        for stage in stages:
            removed = db.execute("DELETE FROM latest WHERE stage = ? AND key NOT IN (SELECT key FROM entries) "
                                 "AND key NOT IN (SELECT key FROM failures)", (stage,)).rowcount
            if removed:  # that stage's recorded plan no longer matches what latest holds
                db.execute("DELETE FROM plans WHERE stage = ?", (stage,))
    return stats


def rebuild_index(store: Store) -> dict[str, Any]:
    """Replace the index's contents with what the shards say, in one transaction."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stats: dict[str, Any] = {"shards": 0, "entries": 0, "skipped": []}
    shard_rows, entry_rows = [], []
    for name in sorted(store.shards.listing()):
        if not name.endswith(".parquet") or "/" not in name:
            continue
        stage, file = name.split("/", 1)
        data = store.shards.read(name)
        if digest_bytes(data) != file[: -len(".parquet")]:
            stats["skipped"].append(f"{name}: fails its checksum")
            continue
        table = pq.read_table(pa.BufferReader(data))
        meta = read_meta(table)
        if meta.get("format") != FORMAT or meta.get("stage") != stage:
            stats["skipped"].append(f"{name}: no {FORMAT} metadata (written by an older version)")
            continue
        keys = table.column("key").to_pylist()
        digests = meta["digests"]
        if len(digests) != len(keys):
            stats["skipped"].append(f"{name}: {len(digests)} digests for {len(keys)} rows")
            continue
        shard_rows.append((name, stage, file[: -len(".parquet")], len(keys), len(data), 0.0))
        entry_rows += [(stage, k, name, i, d) for i, (k, d) in enumerate(zip(keys, digests))]
        stats["shards"] += 1
    db = store.db
    with db:
        for table_name in ("shards", "entries", "failures", "latest", "plans"):
            db.execute(f"DELETE FROM {table_name}")
        db.executemany("INSERT INTO shards VALUES (?, ?, ?, ?, ?, ?)", shard_rows)
        db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)", entry_rows)
    store.refresh()
    stats["entries"] = db.execute("SELECT count(*) FROM entries").fetchone()[0]
    return stats

