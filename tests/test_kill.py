"""kill -9 at many points of every stage, resume each time, and end with exactly the features of an
uninterrupted run, and no debris."""

import errno
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dummies import ALL_STAGES, counts, make_items, run, small_args, write_manifest

HERE = Path(__file__).resolve().parent
# Two items per batch and per shard: every stage commits several times on five items.
SMALL_BATCHES = [a for s in ("cache.shard_rows=2", "clean_text.batch_size=2", "bert.batch_size=2", "clean_image.batch_size=2",
                             "cnn.batch_size=2", "clean_audio.batch_size=2", "mfcc.batch_size=2") for a in ("--set", s)]

KILLER = """
import os, signal, sys
sys.path[:0] = [{root!r}, {tests!r}]
from pipeline.store import Store
from pipeline.stage import STAGES
import stages
STAGE, POINT, NTH, LOG = {stage!r}, {point!r}, {nth}, {log!r}
seen = {{"n": 0}}

def due(stage):
    if stage != STAGE:
        return False
    seen["n"] += 1
    return seen["n"] == NTH

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def logged(cls):  # one line per batch computed: "stage id,id" (the kernel keeps it through SIGKILL)
    original = cls.process
    def process(self, batch):
        with open(LOG, "a") as f:
            f.write(self.name + " " + ",".join(r["id"] for r in batch) + "\\n")
        return original(self, batch)
    cls.process = process

for cls in STAGES.values():
    logged(cls)

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
IDS = {f"item{i:03d}" for i in range(5)}


def features(manifest, workdir, tmp_path):
    out = {}
    for stage in ALL_STAGES:
        path = tmp_path / f"{workdir.name}-{stage}.parquet"
        run(manifest, workdir, *SMALL_BATCHES, "--out", str(path), command=f"export {stage}")
        out[stage] = pd.read_parquet(path).set_index("id").sort_index()
    return out


def committed_keys(work: Path) -> dict[str, set[str]]:
    db = sqlite3.connect(work / "cache" / "index.sqlite")
    try:
        out = {s: set() for s in ALL_STAGES}
        for stage, key in db.execute("SELECT stage, key FROM entries"):
            out[stage].add(key)
        return out
    finally:
        db.close()


def computed_batches(log: Path) -> list[tuple[str, set[str]]]:
    """(stage, ids) of every batch a killed process computed, in order."""
    lines = log.read_text().splitlines() if log.exists() else []
    return [(line.split(" ")[0], set(line.split(" ")[1].split(","))) for line in lines]


def test_kill_9_at_every_kind_of_point_loses_nothing(tmp_path):
    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 5))
    work = tmp_path / "killed"
    done_before = {s: set() for s in ALL_STAGES}  # ids computed by earlier processes, per stage
    lost: tuple[str, set[str]] = ("", set())  # the batch in flight when the previous process was killed
    committed = {s: set() for s in ALL_STAGES}
    for n, (stage, point, nth) in enumerate(SCHEDULE):
        log = tmp_path / f"computed-{n}.log"
        code = KILLER.format(root=str(HERE.parent), tests=str(HERE), stage=stage, point=point, nth=nth, log=str(log),
                             m=str(m), w=str(work), extra=SMALL_BATCHES)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode == -signal.SIGKILL, f"{stage}/{point}: not killed ({proc.returncode}): {proc.stderr[-2000:]}"
        batches = computed_batches(log)
        # This process resumed the previous one: it recomputed nothing but the batch that was in flight there.
        for s in ALL_STAGES:
            again = set().union(*[ids for st, ids in batches if st == s]) & done_before[s]
            assert again == (lost[1] if s == lost[0] else set()), (stage, point, s, again, lost)
        # Nothing committed before is ever lost ...
        now = committed_keys(work)
        for s in ALL_STAGES:
            assert now[s] >= committed[s], (stage, point, s)
        # ... and every batch this process computed is committed but the one in flight when it was killed
        # (none when it was killed right after the commit).
        in_flight = [ids for st, ids in batches if st == stage][-1]
        lost = (stage, set() if point == "after" else in_flight)
        for s in ALL_STAGES:
            computed_here = sum(len(ids) for st, ids in batches if st == s)
            assert len(now[s] - committed[s]) == computed_here - len(lost[1] if s == stage else ()), (stage, point, s)
        for s, ids in batches:
            done_before[s] |= ids
        committed = now
    final = run(m, work, *SMALL_BATCHES)
    assert final["failures"] == [] and final["stage_errors"] == []
    # The final resume computes the last lost batch and what no process got to, nothing more.
    expected = {s: len(IDS - done_before[s]) + (len(lost[1]) if s == lost[0] else 0) for s in ALL_STAGES}
    assert counts(final, "computed") == expected
    assert lost[0] == "mfcc" and expected["mfcc"] == 3  # mfcc's batch [2, 3] lost, [4] never started

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


@pytest.mark.parametrize("call,errno_", [("fsync", errno.ENOSPC), ("replace", errno.EACCES)])
def test_disk_full_or_permission_denied_is_one_clear_error(tmp_path, monkeypatch, capsys, call, errno_):
    """A real shard write fails on the third shard (fsync: disk full; rename: permission denied): exit 5,
    one message naming the cache folder and the cause, no temp file left, the two shards before it kept."""
    import os

    from mmpipe_cli.commands import main

    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 3))
    cache = tmp_path / "w" / "cache"
    attempts: list[str] = []  # the stage of every shard temp file that reached the failing call
    real = getattr(os, call)

    def shard_stage(path: str) -> str | None:
        path = str(path)
        return Path(path).parent.name if path.startswith(str(cache)) and path.endswith(".tmp") else None

    def failing(first, *args, **kwargs):
        stage = shard_stage(os.readlink(f"/proc/self/fd/{first}") if call == "fsync" else first)
        if stage is not None:
            attempts.append(stage)
            if len(attempts) == 3:
                raise OSError(errno_, os.strerror(errno_))
        return real(first, *args, **kwargs)

    monkeypatch.setattr(os, call, failing)
    code = main(["features", "-m", str(m), "-w", str(tmp_path / "w"), "-q", *small_args()])
    monkeypatch.undo()
    assert code == 5 and len(attempts) == 3
    err = capsys.readouterr().err
    assert f"cannot write the cache under {cache}" in err and os.strerror(errno_) in err and "Traceback" not in err
    kept, failed = attempts[:2], attempts[2]
    assert not list(cache.rglob("*.tmp"))  # the temp file of the failed shard was removed
    assert not list((cache / failed).glob("*.parquet"))  # and nothing of it was committed
    entries = committed_keys(tmp_path / "w")
    assert {s for s in ALL_STAGES if entries[s]} == set(kept) and all(len(entries[s]) == 3 for s in kept)
    # Everything committed before the failure stays: the rerun computes only the rest.
    report = run(m, tmp_path / "w")
    assert {s: c for s, c in counts(report, "cached").items() if c} == {s: 3 for s in kept}
    assert counts(report, "computed") == {s: 0 if s in kept else 3 for s in ALL_STAGES}
