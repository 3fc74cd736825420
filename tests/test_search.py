"""mmp search / mmp index and serving.search.Searcher: queries by text, file, id and manifest; exact
scoring; incremental index updates with exact counts; untrusted index files rebuilt; query errors."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import xxhash

from dummies import SMALL, make_items, run, write_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ["the man is eating food", "login password cannot app crash", "payment refund a piece of bread",
         "riding horse the man", "app crash login", "refund payment"]


def _rows(root, start, count, texts):
    rows = make_items(root, start, count)
    for row, text in zip(rows, texts):
        row["text"] = text
    return rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    rows = _rows(root, 0, 6, TEXTS)
    shutil.copy(root / "img" / "0.png", root / "img" / "dup.png")  # identical content, another file
    shutil.copy(root / "aud" / "0.wav", root / "aud" / "dup.wav")
    rows.append({**rows[0], "id": "dup", "image": "img/dup.png", "audio": "aud/dup.wav"})
    rows.append({"id": "textonly", "split": "train", "label": "b", "text": "horse riding food", "image": "", "audio": ""})
    manifest = write_manifest(root / "m.csv", rows)
    run(manifest, root / "w")  # dummies.SMALL: tiny sizes, random CNN, the shared tiny BERT
    return {"root": root, "manifest": manifest, "rows": rows, "work": root / "w"}


def mmp(setup, *args, manifest=None, workdir=None, config=(), capsys=None):
    from mmpipe_cli.commands import main

    argv = ["-m", str(manifest or setup["manifest"]), "-w", str(workdir or setup["work"]), "--quiet"]
    for s in SMALL + list(config):
        argv += ["--set", s]
    code = main([args[0], *argv, *args[1:]])
    out, err = capsys.readouterr() if capsys else ("", "")
    return code, out, err


def search_json(setup, capsys, *args, expect=0, **kw):
    code, out, err = mmp(setup, "search", "--json", *args, capsys=capsys, **kw)
    assert code == expect, err
    return [json.loads(line) for line in out.splitlines()], err


def open_searcher(setup, rows=None, config=(), workdir=None):
    from pipeline.config import Config
    from pipeline.manifest import load
    from pipeline.runner import Workspace
    from serving.search import Searcher

    cfg = Config.load(None, SMALL + list(config))
    manifest = setup["manifest"] if rows is None else write_manifest(setup["root"] / "sub.csv", rows)
    ws = Workspace(workdir or setup["work"], cfg)
    return ws, Searcher(ws, load([str(manifest)]))


def test_text_query_json_format_and_identical_items_together(setup, capsys):
    (answer,), _ = search_json(setup, capsys, "--text", TEXTS[2], "-k", "3")
    assert answer["query"] == "query"
    top = answer["results"][0]
    assert set(top) == {"id", "score", "label", "split", "modalities", "matched", "query_words", "words"}
    assert (top["matched"], top["query_words"], top["words"]) == ("text", "text", {"text": TEXTS[2]})
    assert (top["id"], top["label"], top["split"]) == ("item002", "a", "test") and top["score"] > 0.999
    assert list(top["modalities"]) == ["text", "text_ml"]
    # item000 and dup share every feature key: with -k 1 both come back, with the same score
    (answer,), _ = search_json(setup, capsys, "--text", TEXTS[0], "-k", "1")
    assert [r["id"] for r in answer["results"]] == ["item000", "dup"]
    assert answer["results"][0]["score"] == answer["results"][1]["score"]


def test_image_and_audio_files_find_their_item(setup, capsys):
    root = setup["root"]
    (image,), _ = search_json(setup, capsys, "--image", str(root / "img" / "3.png"), "--modality", "image")
    assert image["results"][0]["id"] == "item003" and image["results"][0]["score"] > 0.9999
    (audio,), _ = search_json(setup, capsys, "--audio", str(root / "aud" / "4.wav"), "-k", "2")
    assert audio["results"][0]["id"] == "item004" and audio["results"][0]["modalities"] == {"audio": pytest.approx(1, abs=1e-5)}


def test_like_uses_cached_features_and_excludes_the_item(setup, capsys):
    (answer,), _ = search_json(setup, capsys, "--like", "item000", "-k", "3")
    ids = [r["id"] for r in answer["results"]]
    assert answer["like"] == "item000" and "item000" not in ids
    assert ids[0] == "dup" and answer["results"][0]["score"] == pytest.approx(1, abs=1e-5)
    assert set(answer["results"][0]["modalities"]) == {"text", "image", "audio", "text_ml"}
    code, _, err = mmp(setup, "search", "--like", "item0", capsys=capsys)
    assert code == 2 and "unknown item id 'item0'" in err


def test_all_scores_are_the_shared_mean_weighted_by_query_coverage(setup):
    from pipeline.config import Config
    from serving.query import QueryEncoder, query_item

    ws, searcher = open_searcher(setup)
    try:
        encoder = QueryEncoder(Config.load(None, SMALL))
        query = query_item("q", text=TEXTS[1], audio="aud/2.wav", base=str(setup["root"]))
        (encoded,) = encoder.encode([query])
        combined = {r["id"]: r for r in searcher.search(encoded, k=100)}
        single = {m: {r["id"]: r["score"] for r in searcher.search(encoded, k=100, modality=m)}
                  for m in ("text", "text_ml", "audio")}
    finally:
        ws.close()
    assert set(combined) == {r["id"] for r in setup["rows"]}  # -k beyond the index: every item
    for item_id, result in combined.items():
        shared = [m for m in ("text", "text_ml", "audio") if item_id in single[m]]
        assert set(result["modalities"]) == set(shared)
        got = {m: single[m].get(item_id, 0.0) for m in single}
        # the words channel is the multilingual family's (text_ml here); then words + audio over 2
        words = got["text_ml"]
        assert result["score"] == pytest.approx((words + got["audio"]) / 2, abs=2e-6)
    assert list(combined["textonly"]["modalities"]) == ["text", "text_ml"]
    assert combined["textonly"]["score"] == pytest.approx(single["text_ml"]["textonly"] / 2, abs=1e-6)  # no voice note
    scores = [r["score"] for r in combined.values()]
    assert scores == sorted(scores, reverse=True)


def test_query_manifest_answers_each_row_and_reports_bad_ones(setup, capsys, tmp_path):
    shutil.copy(setup["root"] / "aud" / "1.wav", tmp_path / "voice.wav")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    queries = write_manifest(tmp_path / "q.csv", [
        {"id": "q1", "text": TEXTS[5], "text_path": "", "image": "", "audio": "voice.wav"},
        {"id": "q2", "text": "", "text_path": "", "image": "broken.png", "audio": ""},
        {"id": "q3", "text": "", "text_path": "latin1.txt", "image": "", "audio": ""},
    ])
    answers, err = search_json(setup, capsys, "--query-manifest", str(queries), "-k", "2", expect=2)
    assert [a["query"] for a in answers] == ["q1", "q2", "q3"]
    assert answers[0]["results"][0]["id"] in ("item005", "item001")
    assert answers[0]["results"][0]["modalities"].keys() == {"text", "audio", "text_ml"}
    assert "ImageDecodeError" in answers[1]["message"] and answers[1]["results"] == []
    assert "TextDecodeError" in answers[2]["message"]
    assert "ImageDecodeError" in err and "TextDecodeError" in err


@pytest.mark.parametrize("kind, content, error", [
    ("image", b"\x89PNG\r\n\x1a\n not an image", "ImageDecodeError"),
    ("audio", b"", "EmptyAudio"),
    ("image", None, "MissingFile"),
])
def test_unusable_query_files_exit_2_with_the_pipelines_error(setup, capsys, tmp_path, kind, content, error):
    path = tmp_path / ("q.png" if kind == "image" else "q.wav")
    if content is not None:
        path.write_bytes(content)
    code, out, err = mmp(setup, "search", f"--{kind}", str(path), capsys=capsys)
    assert code == 2 and out == ""
    assert error in err and "no usable modality" in err


def test_terminal_table_shows_cleaned_text(setup, capsys):
    code, out, _ = mmp(setup, "search", "--text", "refund payment", "-k", "2", capsys=capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("query (text): ") and lines[1].split()[:3] == ["rank", "score", "id"]
    assert lines[2].split()[2] == "item005" and lines[2].endswith("refund payment")


def test_no_indexed_items_for_a_modality_is_a_clear_error(setup, tmp_path, capsys):
    from pipeline.errors import SearchError

    rows = [{"id": "t1", "text": "payment refund"}, {"id": "t2", "text": "login password"}]
    manifest = write_manifest(tmp_path / "text.csv", rows)
    run(manifest, tmp_path / "w")
    code, _, err = mmp(setup, "search", "--audio", str(setup["root"] / "aud" / "1.wav"),
                       manifest=manifest, workdir=tmp_path / "w", capsys=capsys)
    assert code == 2 and "no items with audio features are indexed; run mmp features" in err
    ws, searcher = open_searcher(setup, rows=rows, workdir=tmp_path / "w")
    ws.close()
    assert searcher.modalities == ["text", "text_ml"]
    with pytest.raises(SearchError, match="no items with image features are indexed"):
        searcher.like("t1", modality="image")
    assert [r["id"] for r in searcher.like("t1", k=50)] == ["t2"]


def test_incremental_updates_add_and_remove_exactly_the_change(setup):
    base = setup["rows"]
    ws, _ = open_searcher(setup, rows=base)  # whatever state earlier tests left: now exactly the base items
    ws.close()
    ws, again = open_searcher(setup, rows=base)
    ws.close()
    # (these tones and noise images have no words: the speech and screen spaces stay empty)
    assert again.update_stats == {m: {"added": 0, "removed": 0, "rebuilt": False} for m in MODALITIES}
    new = _rows(setup["root"], 20, 3, ["bread horse", "cannot eating", "piece of food"])
    grown = write_manifest(setup["root"] / "grown.csv", base + new)
    run(grown, setup["work"])
    ws, searcher = open_searcher(setup, rows=base + new)
    results = searcher.like("item020", k=1, modality="text")
    ws.close()
    assert searcher.update_stats == {m: {"added": 3, "removed": 0, "rebuilt": False} if m in TONES else NOTHING for m in MODALITIES}
    assert results[0]["id"] != "item020"
    gone = {"item001", "item002"}
    ws, smaller = open_searcher(setup, rows=[r for r in base + new if r["id"] not in gone])
    ws.close()
    assert smaller.update_stats == {m: {"added": 0, "removed": 2, "rebuilt": False} if m in TONES else NOTHING for m in MODALITIES}
    ws, back = open_searcher(setup, rows=base)  # dropping the new items and re-adding removed ones
    ws.close()
    assert back.update_stats == {m: {"added": 2, "removed": 3, "rebuilt": False} if m in TONES else NOTHING for m in MODALITIES}


MODALITIES = ("text", "image", "audio", "speech", "screen", "text_ml", "speech_ml", "screen_ml")
TONES = ("text", "image", "audio", "text_ml")  # the spaces these items have vectors in
NOTHING = {"added": 0, "removed": 0, "rebuilt": False}


def _break(folder, how):
    with sqlite3.connect(folder / "index.sqlite") as db:
        if how == "sidecar-count":  # the sidecar's row count for the segment no longer matches its ntotal
            (segments,) = db.execute("SELECT segments FROM spaces WHERE name = 'text'").fetchone()
            segments = [[f, n - 1, size] for f, n, size in json.loads(segments)]
            db.execute("UPDATE spaces SET segments = ? WHERE name = 'text'", (json.dumps(segments),))
        if how == "sidecar-key":  # the sidecar lists a key no segment holds
            db.execute("INSERT INTO keys VALUES ('text', ?, 12345)", ("f" * 32,))
    if how.startswith("sidecar"):
        return
    for path in folder.glob("text-*.faiss"):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if how == "truncated" else bytes(len(data)))


@pytest.mark.parametrize("how", ["truncated", "garbage", "sidecar-count", "sidecar-key"])
def test_untrusted_index_is_rebuilt_with_the_same_results(setup, capsys, how):
    before, _ = search_json(setup, capsys, "--text", TEXTS[3], "-k", "20")
    _break(setup["work"] / "index", how)
    ws, searcher = open_searcher(setup)
    ws.close()
    assert searcher.update_stats["text"]["rebuilt"] is True
    assert not searcher.update_stats["image"]["rebuilt"] and not searcher.update_stats["audio"]["rebuilt"]
    after, _ = search_json(setup, capsys, "--text", TEXTS[3], "-k", "20")
    assert after == before


def test_changed_feature_config_rebuilds_only_that_space(setup, capsys):
    changed = ["mfcc.n_mfcc=12"]
    run(setup["manifest"], setup["work"], "--set", changed[0])
    ws, searcher = open_searcher(setup, config=changed)
    ws.close()
    assert searcher.update_stats["audio"]["rebuilt"] is True
    assert searcher.update_stats["audio"]["reason"] == "the feature stage changed (code, config or model)"
    assert searcher.update_stats["text"] == {"added": 0, "removed": 0, "rebuilt": False}
    (answer,), _ = search_json(setup, capsys, "--audio", str(setup["root"] / "aud" / "2.wav"), config=changed)
    assert answer["results"][0]["id"] == "item002"
    # back to the default config (in a fresh process, as a user runs it): the audio space is rebuilt again
    argv = ["index", "-m", str(setup["manifest"]), "-w", str(setup["work"]), "-q"]
    for s in SMALL:
        argv += ["--set", s]
    done = subprocess.run([sys.executable, "-m", "pipeline", *argv], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "audio 6 vectors (rebuilt)" in done.stdout and "text 7 vectors (+0 -0)" in done.stdout


CONCURRENT = """
import sys, numpy as np, xxhash
from serving.index import IndexFolder
def read(keys):
    return np.stack([np.random.default_rng(int(k[:8], 16)).standard_normal(8) for k in keys])
keys = [xxhash.xxh3_128_hexdigest(str(i).encode()) for i in range(60)]
for round in range(6):
    wanted = set(keys[:30 + 5 * round]) if (round + int(sys.argv[1])) % 2 else set(keys[10 * round % 40:])
    with IndexFolder(sys.argv[2]) as folder:
        folder.sync("text", "d", wanted, read)
"""


def test_concurrent_updates_take_turns_and_leave_a_consistent_index(tmp_path):
    from serving.index import IndexFolder
    from serving.space import normalized

    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(n), str(tmp_path)]) for n in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    keys = {xxhash.xxh3_128_hexdigest(str(i).encode()) for i in range(0, 60, 2)}

    def read(ks):
        return np.stack([np.random.default_rng(int(k[:8], 16)).standard_normal(8) for k in ks])

    with IndexFolder(tmp_path) as folder:
        space, stats = folder.sync("text", "d", keys, read)
    assert stats["rebuilt"] is False and space.size == 30
    for key in keys:
        np.testing.assert_allclose(space.vector(key), normalized(read([key]))[0], atol=1e-6)
    assert not list(tmp_path.glob("*.tmp"))


def test_many_small_updates_compact_and_a_re_added_key_is_held_once(tmp_path):
    from serving.index import MAX_SEGMENTS, IndexFolder
    from serving.space import normalized

    def read(ks):
        return np.stack([np.random.default_rng(int(k[:8], 16)).standard_normal(4) for k in ks])

    keys = [xxhash.xxh3_128_hexdigest(str(i).encode()) for i in range(40)]
    wanted = set(keys[:20])
    for n, round_keys in enumerate([wanted] + [wanted | set(keys[20 : 21 + i]) for i in range(MAX_SEGMENTS + 2)]):
        with IndexFolder(tmp_path) as folder:
            space, stats = folder.sync("audio", "d", round_keys, read)
        assert stats["added"] == (20 if n == 0 else 1) and stats["removed"] == 0
        assert len(list(tmp_path.glob("*.faiss"))) <= MAX_SEGMENTS
    final = wanted | set(keys[20:31])
    for step in (final - {keys[0]}, final):  # remove a key, then add it back: its old vector is still on disk
        with IndexFolder(tmp_path) as folder:
            space, stats = folder.sync("audio", "d", step, read)
    with IndexFolder(tmp_path) as folder:
        space, stats = folder.sync("audio", "d", final, read)
    assert stats == {"added": 0, "removed": 0, "rebuilt": False} and space.size == len(final)
    ids, scores = space.scores(normalized(read([keys[0]]))[0])
    assert sorted(ids.tolist()) == sorted(space.ids.values())  # every key exactly once
    np.testing.assert_allclose(space.vector(keys[0]), normalized(read([keys[0]]))[0], atol=1e-6)


def test_a_busy_index_is_a_clear_error_after_the_timeout(tmp_path):
    from pipeline.errors import LockBusyError
    from serving.index import IndexFolder

    with IndexFolder(tmp_path):
        with pytest.raises(LockBusyError, match="being updated by another process"):
            with IndexFolder(tmp_path, lock_timeout=0.2):
                pass
