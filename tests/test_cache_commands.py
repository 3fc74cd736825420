"""The cache commands and promises README states, through the CLI: status (reasons, failures by type,
waiting on failed input, exit codes), skipped counts, verify, --retry-failed, identical inputs computed
once, raw hashes memoized (a no-op run reads no raw bytes)."""

import shutil
import sqlite3

from dummies import ALL_STAGES, counts, make_items, only, run, small_args, write_audio, write_manifest
from mmpipe_cli.commands import main


def committed(workdir) -> dict[str, set[str]]:
    db = sqlite3.connect(workdir / "cache" / "index.sqlite")
    try:
        out: dict[str, set[str]] = {}
        for stage, key in db.execute("SELECT stage, key FROM entries"):
            out.setdefault(stage, set()).add(key)
        return out
    finally:
        db.close()


def status_lines(capsys, *args: str) -> tuple[int, dict[str, str]]:
    capsys.readouterr()
    code = main(["status", *args])
    out = capsys.readouterr().out.splitlines()[1:]
    return code, {line.split()[0]: " ".join(line.split()) for line in out}


def test_status_reasons_failures_by_type_waiting_and_skipped(tmp_path, capsys):
    from tiny_models import tiny_bert

    data = tmp_path / "data"
    rows = make_items(data, 0, 4)
    (data / "img" / "bad1.png").write_bytes(b"garbage one")
    (data / "img" / "bad2.png").write_bytes(b"garbage two")
    rows[1]["image"], rows[2]["image"], rows[3]["audio"] = "img/bad1.png", "img/bad2.png", "aud/missing.wav"
    m = write_manifest(data / "m.csv", rows)
    bert = ["--set", f"bert.model={tiny_bert(tmp_path / 'bert', seed=0)}"]
    first = run(m, tmp_path / "w", *bert)
    # `skipped`: items whose input failed upstream (two images, one audio file).
    assert counts(first, "skipped") == only(cnn=2, mfcc=1)
    assert counts(first, "computed") == {**{s: 4 for s in ALL_STAGES}, "clean_image": 2, "cnn": 2, "clean_audio": 3, "mfcc": 3}

    tiny_bert(tmp_path / "bert", seed=1)  # same folder, new weights: a model change, not a config change
    write_audio(data / "aud" / "0.wav", seed=50)  # new content under the same path
    m2 = write_manifest(data / "m2.csv", make_items(data, 4, 1))
    args = ["-m", str(m), "-m", str(m2), "-w", str(tmp_path / "w"), *small_args(*bert, "--set", "mfcc.n_mfcc=7")]
    code, lines = status_lines(capsys, *args)
    assert code == 0
    assert {s: line for s, line in lines.items() if s in ALL_STAGES} == {
        "clean_text": "clean_text fresh 4 | to compute 1 (1 new item)",
        "bert": "bert fresh 0 | to compute 5 (4 stage code or model change, 1 new item)",
        "clean_image": "clean_image fresh 2 | to compute 1 (1 new item) | failed 2 (2 ImageDecodeError)",
        "cnn": "cnn fresh 2 | to compute 1 (1 new item) | waiting on failed input 2",
        "clean_audio": "clean_audio fresh 2 | to compute 2 (1 changed input, 1 new item) | failed 1 (1 MissingFile)",
        "mfcc": "mfcc fresh 0 | to compute 4 (3 config change, 1 new item) | waiting on failed input 1",
    }
    # A bad stage name or manifest is exit 2 with one line.
    assert main(["status", "--stage", "mfc", *args]) == 2 and "did you mean 'mfcc'" in capsys.readouterr().err
    assert main(["status", "-m", str(data / "nope.csv"), "-w", str(tmp_path / "w")]) == 2
    assert "manifest not found" in capsys.readouterr().err


def test_verify_drops_a_corrupt_shard_and_the_next_run_recomputes_it(tmp_path, capsys):
    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 3))
    run(m, tmp_path / "w")
    verify = ["verify", "-m", str(m), "-w", str(tmp_path / "w"), *small_args()]
    capsys.readouterr()
    assert main(verify) == 0 and "verify: all shards match their checksums" in capsys.readouterr().out
    shard = next((tmp_path / "w" / "cache" / "mfcc").glob("*.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size: only the checksum can tell
    shard.write_bytes(bytes(data))
    assert main(verify) == 0
    out = capsys.readouterr().out
    assert str(shard) in out and "verify: 1 corrupt shard(s) dropped" in out
    assert not shard.exists() and "mfcc" not in committed(tmp_path / "w")
    report = run(m, tmp_path / "w")
    assert counts(report, "computed") == only(mfcc=3) and report["warnings"] == []


def test_retry_failed_recomputes_known_failures(tmp_path, monkeypatch):
    from stages.clean_image import CleanImage

    data = tmp_path / "data"
    rows = make_items(data, 0, 3)
    (data / "img" / "1.png").write_bytes(b"not a png")
    m = write_manifest(data / "m.csv", rows)
    run(m, tmp_path / "w")
    seen: list[str] = []
    original = CleanImage.process_one
    monkeypatch.setattr(CleanImage, "process_one", lambda self, record: seen.append(record["id"]) or original(self, record))
    known = run(m, tmp_path / "w")
    # (ocr reads the same raw screenshot and fails the same way: listed once, "also" naming it)
    assert seen == [] and [(f["stage"], f["id"], f.get("cached"), f.get("also")) for f in known["failures"]] == \
        [("clean_image", "item001", True, ["ocr"])]
    retried = run(m, tmp_path / "w", "--retry-failed")
    assert seen == ["item001"]  # only the failed item, and it is decoded again
    assert [(f["id"], f["error"], f.get("cached")) for f in retried["failures"]] == [("item001", "ImageDecodeError", None)]
    assert counts(retried, "computed") == {s: 0 for s in ALL_STAGES}


def test_identical_inputs_are_computed_once(tmp_path, monkeypatch):
    from stages import STAGES  # importing the package registers every stage

    data = tmp_path / "data"
    rows = make_items(data, 0, 3)
    shutil.copy(data / "img" / "1.png", data / "img" / "copy.png")  # same bytes under another name
    rows.append({**rows[1], "id": "twin", "image": "img/copy.png"})  # same text, same audio file
    m = write_manifest(data / "m.csv", rows)
    processed: dict[str, list[str]] = {}
    for name in ALL_STAGES:
        cls, original = STAGES[name], STAGES[name].process
        monkeypatch.setattr(cls, "process", lambda self, batch, original=original: processed.setdefault(self.name, []).extend(
            r["id"] for r in batch) or original(self, batch))
    report = run(m, tmp_path / "w")
    assert report["failures"] == [] and counts(report, "computed") == {s: 4 for s in ALL_STAGES}  # items served
    assert {s: len(ids) for s, ids in processed.items()} == {s: 3 for s in ALL_STAGES}  # computations
    assert {s: len(keys) for s, keys in committed(tmp_path / "w").items()} == {s: 3 for s in ALL_STAGES + ["multilingual"]}


def test_raw_hashes_are_memoized_a_noop_run_reads_no_raw_bytes(tmp_path, monkeypatch):
    import builtins
    import os

    import pipeline.keys

    data = tmp_path / "data"
    rows = make_items(data, 0, 3)
    (data / "txt").mkdir()
    (data / "txt" / "note.txt").write_text("a note in a file", encoding="utf-8")
    rows[2] = {**rows[2], "text": "", "text_path": "txt/note.txt"}
    m = write_manifest(data / "m.csv", rows)
    run(m, tmp_path / "w")
    hashed, opened = [], []
    real_digest, real_open = pipeline.keys.digest_file, builtins.open
    monkeypatch.setattr(pipeline.keys, "digest_file", lambda path: hashed.append(str(path)) or real_digest(path))
    monkeypatch.setattr(builtins, "open", lambda file, *a, **k: opened.append(str(file)) or real_open(file, *a, **k))
    raw = [str((data / sub).resolve()) for sub in ("img", "aud", "txt")]
    report = run(m, tmp_path / "w")
    assert counts(report, "computed") == {s: 0 for s in ALL_STAGES}
    assert hashed == [] and not [p for p in opened if p.startswith(tuple(raw))]  # stat only: no raw byte read
    # A new mtime (same bytes) is hashed again, once, and still nothing is computed.
    image = data / "img" / "0.png"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    report = run(m, tmp_path / "w")
    assert hashed == [str(image.resolve())] and counts(report, "computed") == {s: 0 for s in ALL_STAGES}
