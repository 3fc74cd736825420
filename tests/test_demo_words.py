"""The demo's voice-only and screenshot-only tickets (pipeline/demo.py): counts, columns, splits, the recorded
clips (packaged, small, decodable), the drawn dialogs, and byte-for-byte determinism."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import pytest

from pipeline import demo, manifest
from stages.clean_audio import decode
from stages.clean_image import CleanImageConfig, decode_image


def _rows(out: Path) -> list[dict]:
    with open(out / "demo.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def words_demo(tmp_path_factory) -> Path:
    """Few typed tickets (they are tested elsewhere), the default number of spoken and shown ones."""
    out = tmp_path_factory.mktemp("words_demo")
    demo.generate(out, n_items=8)
    return out


def test_counts_columns_and_splits(words_demo):
    rows = _rows(words_demo)
    assert len(rows) == 8 + 48 + 48
    assert [r["kind"] for r in rows] == ["typed"] * 8 + ["spoken"] * 48 + ["shown"] * 48
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows[:8]:
        assert r["words_topic"] == r["words_index"] == ""
    for kind, bank in (("spoken", demo.SPOKEN), ("shown", demo.SHOWN)):
        tickets = [r for r in rows if r["kind"] == kind]
        assert {r["split"] for r in tickets} == {"train", "val", "test"}
        for split in ("val", "test"):
            assert {r["label"] for r in tickets if r["split"] == split} == set(demo.CLASSES)  # stratified by label
        for label in demo.CLASSES:
            assert sum(r["label"] == label for r in tickets) == 12
        for r in tickets:
            topic = demo.CLASSES[r["label"]][0]
            assert r["words_topic"] == topic
            assert 0 <= int(r["words_index"]) < len(bank[topic])
            text = r["text"].lower()  # the typed line names no topic
            assert not any(word in text for word in ("card", "pay", "bill", "password", "log", "sign", "account"))
        # each topic's entries are all used before any is used twice
        for topic in bank:
            used = [int(r["words_index"]) for r in tickets if r["words_topic"] == topic]
            assert len(set(used)) == min(len(used), len(bank[topic]))
    spoken = [r for r in rows if r["kind"] == "spoken"]
    assert all(r["audio"].endswith(".ogg") for r in spoken)
    shown = [r for r in rows if r["kind"] == "shown"]
    assert all(r["image"] for r in shown)


def test_manifest_keeps_the_words_columns_as_metadata(words_demo):
    items = {it.id: it for it in manifest.load(str(words_demo / "demo.csv"))}
    assert len(items) == 104
    spoken = items["t0008"]
    assert spoken.meta["kind"] == "spoken" and spoken.has("audio")
    assert spoken.meta["words_topic"] in demo.SPOKEN and spoken.meta["words_index"].isdigit()
    assert items["t0000"].meta["kind"] == "typed"


def test_spoken_audio_is_the_class_clip_and_decodes(words_demo):
    for r in (r for r in _rows(words_demo) if r["kind"] == "spoken"):
        data = (words_demo / r["audio"]).read_bytes()
        topic, _theme, pitch = demo.CLASSES[r["label"]]
        assert data == demo.voice_clip(topic, int(r["words_index"]), pitch).read_bytes()
        samples, sr = decode(data, 600.0)
        assert samples.ndim == 2 and samples.shape[1] == 1 and sr > 0
        assert 1.0 <= samples.shape[0] / sr <= 8.0
        assert float(abs(samples).max()) > 0.1  # speech, not silence


def test_shown_images_decode_as_dialogs(words_demo):
    cfg = CleanImageConfig()
    for r in (r for r in _rows(words_demo) if r["kind"] == "shown"):
        img = decode_image((words_demo / r["image"]).read_bytes(), cfg)
        assert 320 <= img.width <= 1024
        theme = demo.CLASSES[r["label"]][1]
        mean = sum(img.convert("L").resize((32, 32)).getdata()) / 1024
        assert (mean > 128) == (theme == "light")


def test_clips_are_packaged_complete_and_small():
    folder = resources.files("pipeline") / demo.CLIPS
    clips = sorted(p.name for p in folder.iterdir() if p.name.endswith(".ogg"))
    expected = sorted(f"{t}_{i:02d}_{p}.ogg" for t, pairs in demo.SPOKEN.items() for i in range(len(pairs)) for p in demo.PITCHES)
    assert clips == expected
    total = sum(len((folder / name).read_bytes()) for name in clips)
    assert total < 600_000
    for topic, pairs in demo.SPOKEN.items():
        assert len(pairs) >= 20 and len({s for s, _ in pairs}) == len(pairs)
        assert all(s != p for s, p in pairs)
    for topic, pairs in demo.SHOWN.items():
        assert len(pairs) >= 20 and len({s for s, _ in pairs}) == len(pairs)


def test_missing_clip_is_a_named_error():
    with pytest.raises(FileNotFoundError, match="demo voice clip"):
        demo.voice_clip("payment", 999, "low")


def test_generation_is_deterministic_and_leaves_typed_tickets_alone(tmp_path):
    a, b, typed_only = tmp_path / "a", tmp_path / "b", tmp_path / "typed"
    demo.generate(a, n_items=8, n_spoken=12, n_shown=12)
    demo.generate(b, n_items=8, n_spoken=12, n_shown=12)
    files_a = _files(a)
    assert files_a == _files(b)
    assert len(files_a) > 40
    demo.generate(typed_only, n_items=8, n_spoken=0, n_shown=0)
    # the typed tickets' files and rows do not depend on the spoken / shown ones
    for name, data in _files(typed_only).items():
        if name.endswith((".complete", "demo.csv")):
            continue
        assert files_a[name] == data, name
    assert _rows(typed_only) == _rows(a)[:8]


def test_regenerates_when_the_counts_change(tmp_path):
    demo.generate(tmp_path, n_items=8, n_spoken=4, n_shown=4)
    assert len(_rows(tmp_path)) == 16
    demo.generate(tmp_path, n_items=8, n_spoken=8, n_shown=0)
    rows = _rows(tmp_path)
    assert len(rows) == 16 and {r["kind"] for r in rows[8:]} == {"spoken"}
    assert {r["split"] for r in rows[8:]} == {"train", "val", "test"}
