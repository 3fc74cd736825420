"""Failures are data, crashes lose nothing committed, runs on one work directory take turns."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from dummies import ALL_STAGES as STAGES, counts, make_items, only, run, small_args, write_audio, write_manifest
from mmpipe_cli.commands import main

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STAGES_IN_ORDER = ["clean_text", "bert", "clean_image", "cnn", "clean_audio", "mfcc"]  # the order stages commit in


def test_bad_items_are_named_failures_and_the_run_goes_on(tmp_path):
    data = tmp_path / "data"
    rows = make_items(data, 0, 4)
    (data / "img" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    rows[1]["image"] = "img/bad.png"
    rows[2]["audio"] = "aud/missing.wav"
    rows[3]["text"] = "<p>\u200b</p>"
    report = run(write_manifest(data / "m.csv", rows), tmp_path / "w")
    by_item = {(f["stage"], f["id"]): f for f in report["failures"]}
    assert by_item[("clean_image", "item001")]["error"] == "ImageDecodeError"
    assert by_item[("clean_audio", "item002")]["error"] == "MissingFile"
    assert "item002" in by_item[("clean_audio", "item002")]["message"]
    assert by_item[("clean_text", "item003")]["error"] == "EmptyText"
    assert counts(report, "computed") == {s: 3 for s in STAGES}
    assert main(["features", "-m", str(data / "m.csv"), "-w", str(tmp_path / "w"), "-q", "--strict", *small_args()]) == 1


def test_failed_items_are_retried(tmp_path):
    data = tmp_path / "data"
    rows = make_items(data, 0, 3)
    good_png = (data / "img" / "1.png").read_bytes()
    (data / "img" / "1.png").write_bytes(b"garbage")
    rows[2]["audio"] = "aud/late.wav"
    m = write_manifest(data / "m.csv", rows)
    first = run(m, tmp_path / "w")
    assert {(f["stage"], f["id"]) for f in first["failures"]} == {("clean_image", "item001"), ("clean_audio", "item002")}
    # Unchanged corrupt input: a known failure, not recomputed; a missing file is looked for again.
    second = run(m, tmp_path / "w")
    assert counts(second, "computed")["clean_image"] == 0
    assert [f.get("cached") for f in second["failures"] if f["stage"] == "clean_image"] == [True]
    # Both fixed: both computed, nothing else.
    (data / "img" / "1.png").write_bytes(good_png)
    write_audio(data / "aud" / "late.wav", seed=5)
    third = run(m, tmp_path / "w")
    assert third["failures"] == []
    assert counts(third, "computed") == only(clean_image=1, cnn=1, clean_audio=1, mfcc=1)


def test_unexpected_exception_is_retried_next_run(tmp_path, monkeypatch):
    from stages.clean_text import CleanText

    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 3))
    original = CleanText.process_one

    def flaky(self, record):
        if record["id"] == "item001":
            raise RuntimeError("simulated worker hiccup")
        return original(self, record)

    monkeypatch.setattr(CleanText, "process_one", flaky)
    first = run(m, tmp_path / "w")
    assert [(f["id"], f["error"]) for f in first["failures"]] == [("item001", "UnexpectedError")]
    assert counts(first, "computed")["clean_text"] == 2
    monkeypatch.setattr(CleanText, "process_one", original)
    second = run(m, tmp_path / "w")
    assert counts(second, "computed")["clean_text"] == 1 and second["failures"] == []


CRASH = """
import os, sys
sys.path[:0] = [{root!r}, {tests!r}]
from pipeline.store import Store
calls = {{"n": 0}}
original = Store._record_shard
def crash(self, *a, **k):
    calls["n"] += 1
    if calls["n"] == {at}:
        os._exit(9)  # killed after the shard file is in place, before the index commit
    return original(self, *a, **k)
Store._record_shard = crash
from dummies import run
run({m!r}, __import__("pathlib").Path({w!r}), "--set", "cache.shard_rows=2")
"""


@pytest.mark.parametrize("at", [1, 3])
def test_crash_between_shard_write_and_commit_recovers(tmp_path, at):
    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 5))
    code = CRASH.format(root=str(ROOT), tests=str(HERE), at=at, m=str(m), w=str(tmp_path / "w"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    orphans = list((tmp_path / "w" / "cache").glob("*/*.parquet"))
    assert orphans  # the uncommitted shard is on disk
    report = run(m, tmp_path / "w", "--set", "cache.shard_rows=2")
    # Each stage commits its one batch as one shard, in stage order; the crash lost the at-th shard only:
    # the stages committed before it are all cached, the rest all computed.
    done = STAGES_IN_ORDER[: at - 1]
    assert counts(report, "cached") == {s: 5 if s in done else 0 for s in STAGES}
    assert counts(report, "computed") == {s: 0 if s in done else 5 for s in STAGES}
    assert report["failures"] == []
    run(m, tmp_path / "ref")
    for stage in STAGES:
        a = tmp_path / f"{stage}-a.parquet"
        b = tmp_path / f"{stage}-b.parquet"
        run(m, tmp_path / "w", "--out", str(a), command=f"export {stage}")
        run(m, tmp_path / "ref", "--out", str(b), command=f"export {stage}")
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))
    assert not list((tmp_path / "w" / "cache").glob("*/.*.tmp"))


def test_corrupt_shard_is_detected_and_recomputed(tmp_path):
    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 4))
    run(m, tmp_path / "w")
    shard = next((tmp_path / "w" / "cache" / "clean_audio").glob("*.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    report = run(m, tmp_path / "w", "--set", "mfcc.n_mfcc=9")  # mfcc must read clean_audio
    assert any("fails its checksum" in w for w in report["warnings"])
    assert counts(report, "computed")["clean_audio"] == 4 and counts(report, "computed")["mfcc"] == 4
    assert counts(report, "cached")["clean_text"] == 4  # the replanned attempt's counts, not both attempts'
    assert report["failures"] == []


HOLDER = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal, even if started where SIGINT is ignored
sys.path[:0] = [{root!r}, {tests!r}]
from stages.clean_text import CleanText
original = CleanText.process_one

def slow(self, record):
    if record["id"] == "item002":  # items 0 and 1 are committed by now (one per shard)
        print("holding", flush=True)
        time.sleep(60)
    return original(self, record)

CleanText.process_one = slow
from mmpipe_cli.commands import main
sys.argv = ["mmp", *sys.argv[1:]]
sys.exit(main(sys.argv[1:]))
"""


def test_a_busy_work_directory_names_the_run_holding_it_and_ctrl_c_keeps_its_work(tmp_path, capsys):
    """A real run holds the lock: a second run is refused (exit 4) naming its pid, host, command and start
    time. Ctrl-C (SIGINT) then stops the holder with exit 130, and the items it committed stay committed."""
    import signal
    import socket

    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 5))
    args = ["run", "clean_text", "-m", str(m), "-w", str(tmp_path / "w"), "-q",
            *small_args("--set", "clean_text.batch_size=1", "--set", "cache.shard_rows=1")]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(ROOT), tests=str(HERE)), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        code = main(["features", "-m", str(m), "-w", str(tmp_path / "w"), "-q", *small_args()])
        assert code == 4 and time.monotonic() - started < 10
        err = capsys.readouterr().err
        assert f"pid {holder.pid} on {socket.gethostname()} running 'mmp {' '.join(args)}' since 20" in err, err
        holder.send_signal(signal.SIGINT)
        _, holder_err = holder.communicate(timeout=60)
        assert holder.returncode == 130, holder_err
        assert "interrupted: committed work is kept" in holder_err and "Traceback" not in holder_err
    finally:
        holder.kill()
        holder.wait()
    report = run(m, tmp_path / "w", command="run clean_text")
    assert counts(report, "cached")["clean_text"] == 2 and counts(report, "computed")["clean_text"] == 3


HOLD = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1]); lock.acquire()
print("held", flush=True)
time.sleep(30)
"""


def test_concurrent_run_is_refused_with_a_clear_message(tmp_path, capsys):
    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 2))
    (tmp_path / "w").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "w" / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        code = main(["features", "-m", str(m), "-w", str(tmp_path / "w"), "-q", "--set", "run.lock_timeout=0.5"])
        assert code == 4 and time.monotonic() - started < 10
        assert "is in use by" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    # A killed holder leaves no stale lock behind: the OS released it.
    run(m, tmp_path / "w")
