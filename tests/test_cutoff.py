"""Early cutoff: a stage's key derives from the content digest of its upstream output, so a raw change
that cleans to the same output stops at the cleaning stage; and the digests survive a kill -9."""

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from dummies import SMALL, counts, make_items, only, run, write_manifest

HERE = Path(__file__).resolve().parent


def status_lines(manifest, workdir, capsys, *extra) -> dict[str, str]:
    from mmpipe_cli.commands import main

    capsys.readouterr()
    args = ["status", "-m", str(manifest), "-w", str(workdir)]
    for s in [*SMALL, *extra]:
        args += ["--set", s]
    assert main(args) == 0
    return {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}


def test_same_cleaned_output_stops_the_recomputation(tmp_path, capsys):
    from PIL import Image
    import soundfile as sf

    data = tmp_path / "data"
    rows = make_items(data, 0, 4)
    for i, row in enumerate(rows):
        row["text"] = f"line one of ticket {i}\r\nline two\r\n"
    m = write_manifest(data / "m.csv", rows)
    run(m, tmp_path / "w")

    # CRLF -> LF inside every text: new raw bytes, same cleaned text.
    for row in rows:
        row["text"] = row["text"].replace("\r\n", "\n")
    # Every PNG re-saved with another compression level: new bytes, same pixels.
    for i in range(4):
        path = data / "img" / f"{i}.png"
        Image.open(path).save(path, compress_level=9, optimize=True)
    # One WAV converted to FLAC: new file and format, same samples.
    samples, rate = sf.read(data / "aud" / "1.wav", dtype="int16")
    sf.write(data / "aud" / "1.flac", samples, rate, subtype="PCM_16")
    rows[1]["audio"] = "aud/1.flac"
    write_manifest(m, rows)

    lines = status_lines(m, tmp_path / "w", capsys)
    assert "to compute      4 (4 changed input)" in lines["clean_text"]
    assert "waiting on clean_text 4 (reused where its new output is unchanged)" in lines["bert"]

    report = run(m, tmp_path / "w")
    assert counts(report, "computed") == only(clean_text=4, clean_image=4, clean_audio=1)
    assert counts(report, "cutoff") == only(bert=4, cnn=4, mfcc=1)
    lines = status_lines(m, tmp_path / "w", capsys)
    assert "fresh      4 (4 reused: input changed, clean_text output unchanged)" in lines["bert"]
    assert "fresh      4 (1 reused: input changed, clean_audio output unchanged)" in lines["mfcc"]
    # The note explains the last run only: a no-op run clears it.
    assert counts(run(m, tmp_path / "w"), "computed") == only()
    assert "reused" not in status_lines(m, tmp_path / "w", capsys)["bert"]


def test_raising_max_chars_recomputes_bert_only_where_the_text_changed(tmp_path):
    data = tmp_path / "data"
    rows = make_items(data, 0, 6)
    for i, row in enumerate(rows):
        row["text"] = "short" if i % 2 else "a much longer message " * 3
    m = write_manifest(data / "m.csv", rows)
    run(m, tmp_path / "w", "--set", "clean_text.max_chars=20", command="run bert")
    report = run(m, tmp_path / "w", "--set", "clean_text.max_chars=200", command="run bert")
    assert report["stages"]["clean_text"]["computed"] == 6  # its config changed: every item
    assert report["stages"]["bert"]["computed"] == 3 and report["stages"]["bert"]["cutoff"] == 3


KILLER = """
import os, signal, sys
sys.path[:0] = [{root!r}, {tests!r}]
from pipeline.store import Store

class KillAfterEntries:
    # The index connection, except that the process dies once a shard's entries (with their digests)
    # are written inside the commit transaction, before it commits.
    def __init__(self, db):
        self.db = db
    def __getattr__(self, name):
        return getattr(self.db, name)
    def __enter__(self):
        return self.db.__enter__()
    def __exit__(self, *exc):
        return self.db.__exit__(*exc)
    def executemany(self, sql, rows):
        out = self.db.executemany(sql, rows)
        if sql.startswith("INSERT OR REPLACE INTO entries") and rows and rows[0][0] == {stage!r}:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

init = Store.__init__
def hooked(self, *a, **k):
    init(self, *a, **k)
    self.db = KillAfterEntries(self.db)
Store.__init__ = hooked
from dummies import run
run(__import__("pathlib").Path({m!r}), __import__("pathlib").Path({w!r}), "--set", "cache.shard_rows=2", command="run mfcc")
"""


def test_kill_9_inside_the_commit_leaves_no_entry_without_its_digest(tmp_path):
    from pipeline.store import Store

    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 3))
    work = tmp_path / "w"
    for stage in ("clean_audio", "mfcc"):
        code = KILLER.format(root=str(HERE.parent), tests=str(HERE), stage=stage, m=str(m), w=str(work))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        db = sqlite3.connect(work / "cache" / "index.sqlite")
        assert db.execute("SELECT count(*) FROM entries WHERE stage = ?", (stage,)).fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM entries WHERE digest IS NULL").fetchone()[0] == 0
        db.close()
    report = run(m, work, "--set", "cache.shard_rows=2", command="run mfcc")
    assert report["stages"]["mfcc"]["computed"] == 3 and report["failures"] == []
    store = Store(work)
    digests = store.committed("mfcc")
    records = store.read("mfcc", list(digests))
    store.close()
    from pipeline.keys import digest_record

    assert all(digest_record(records[k]) == d for k, d in digests.items())  # each digest is its row's
    run(m, tmp_path / "straight", command="run mfcc")
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    run(m, work, "--out", str(a), command="export mfcc")
    run(m, tmp_path / "straight", "--out", str(b), command="export mfcc")
    for x, y in zip(pd.read_parquet(a)["mfcc"], pd.read_parquet(b)["mfcc"]):
        assert np.array_equal(x, y)
