"""kill -9 at many points of every stage, resume each time, and end with exactly the features of an
uninterrupted run, and no debris."""

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dummies import ALL_STAGES, make_items, run, write_manifest

HERE = Path(__file__).resolve().parent
# Two items per batch and per shard: every stage commits several times on five items.
SMALL_BATCHES = [a for s in ("cache.shard_rows=2", "clean_text.batch_size=2", "bert.batch_size=2", "clean_image.batch_size=2",
                             "cnn.batch_size=2", "clean_audio.batch_size=2", "mfcc.batch_size=2") for a in ("--set", s)]

KILLER = """
import os, signal, sys
sys.path[:0] = [{root!r}, {tests!r}]
from pipeline.store import Store
STAGE, POINT, NTH = {stage!r}, {point!r}, {nth}
seen = {{"n": 0}}

def due(stage):
    if stage != STAGE:
        return False
    seen["n"] += 1
    return seen["n"] == NTH

def die():
    os.kill(os.getpid(), signal.SIGKILL)

commit, write, record = Store.commit_shard, Store._write_shard_file, Store._record_shard

def commit_hook(self, stage, keys, records, *meta):
    if POINT == "before" and due(stage):
        die()  # outputs computed, nothing written
    return commit(self, stage, keys, records, *meta)

def write_hook(self, stage, checksum, data):
    if POINT == "during" and due(stage):
        folder = os.path.join(self.shards.root, stage)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f".{{checksum}}.parquet.{{os.getpid()}}.tmp"), "wb") as f:
            f.write(data[: len(data) // 2])
        die()  # half a temp file on disk
    return write(self, stage, checksum, data)

def record_hook(self, stage, name, checksum, keys, size):
    if POINT == "between" and due(stage):
        die()  # shard renamed into place, index not updated
    record(self, stage, name, checksum, keys, size)
    if POINT == "after" and due(stage):
        die()  # committed, then killed

Store.commit_shard, Store._write_shard_file, Store._record_shard = commit_hook, write_hook, record_hook
from dummies import run
run(__import__("pathlib").Path({m!r}), __import__("pathlib").Path({w!r}), *{extra!r})
"""

SCHEDULE = [  # (stage, point, nth commit of that stage in that process), in stage order
    ("clean_text", "before", 2), ("clean_text", "after", 1),
    ("bert", "during", 1), ("bert", "between", 2), ("bert", "after", 1),
    ("clean_image", "before", 1), ("cnn", "during", 2), ("cnn", "between", 1),
    ("clean_audio", "after", 2), ("mfcc", "before", 1), ("mfcc", "during", 2), ("mfcc", "between", 1),
]


def features(manifest, workdir, tmp_path):
    out = {}
    for stage in ALL_STAGES:
        path = tmp_path / f"{workdir.name}-{stage}.parquet"
        run(manifest, workdir, *SMALL_BATCHES, "--out", str(path), command=f"export {stage}")
        out[stage] = pd.read_parquet(path).set_index("id").sort_index()
    return out


def test_kill_9_at_every_kind_of_point_loses_nothing(tmp_path):
    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 5))
    work = tmp_path / "killed"
    for stage, point, nth in SCHEDULE:
        code = KILLER.format(root=str(HERE.parent), tests=str(HERE), stage=stage, point=point, nth=nth,
                             m=str(m), w=str(work), extra=SMALL_BATCHES)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode == -signal.SIGKILL, f"{stage}/{point}: not killed ({proc.returncode}): {proc.stderr[-2000:]}"
    final = run(m, work, *SMALL_BATCHES)
    assert final["failures"] == [] and final["stage_errors"] == []

    run(m, tmp_path / "straight", *SMALL_BATCHES)
    got, want = features(m, work, tmp_path), features(m, tmp_path / "straight", tmp_path)
    for stage in ALL_STAGES:
        assert list(got[stage].index) == list(want[stage].index) == [f"item{i:03d}" for i in range(5)]
        for column in want[stage].columns:
            for a, b in zip(got[stage][column], want[stage][column]):
                assert np.array_equal(np.asarray(a), np.asarray(b)), (stage, column)  # bit for bit

    cache = work / "cache"
    assert not list(cache.rglob("*.tmp"))
    db = sqlite3.connect(cache / "index.sqlite")
    known = {name for (name,) in db.execute("SELECT name FROM shards")}
    on_disk = {f"{p.parent.name}/{p.name}" for p in cache.glob("*/*.parquet")}
    assert on_disk == known  # no orphan shard left behind


def test_truncated_shard_is_noticed_on_the_next_run(tmp_path):
    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 3))
    run(m, tmp_path / "w")
    shard = next((tmp_path / "w" / "cache" / "mfcc").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:100])
    report = run(m, tmp_path / "w")
    assert any("instead of" in w for w in report["warnings"])
    assert report["stages"]["mfcc"]["computed"] == 3


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), PermissionError(13, "Permission denied")])
def test_disk_full_or_permission_denied_is_one_clear_error(tmp_path, monkeypatch, capsys, error):
    from pipeline.cli import main
    from pipeline.store import Store

    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 3))

    def refuse(self, stage, checksum, data):
        raise error

    monkeypatch.setattr(Store, "_write_shard_file", refuse)
    code = main(["features", "-m", str(m), "-w", str(tmp_path / "w"), "-q"])
    assert code == 5
    err = capsys.readouterr().err
    assert "cannot write the cache" in err and error.strerror in err and "Traceback" not in err
    db = sqlite3.connect(tmp_path / "w" / "cache" / "index.sqlite")
    assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 0
    assert not list((tmp_path / "w" / "cache").rglob("*.parquet"))
