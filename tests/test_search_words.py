"""The words of voice notes and screenshots in search: a typed query finds a voice-only ticket by what its
note says and a screenshot-only ticket by what its screen shows, a voice or screenshot query finds a typed
ticket, results say where they matched; the words channel's scoring rule; notes without speech are no
words, not errors. Real packaged Whisper (tiny.en) and OCR models, the shared tiny BERT (dummies.SMALL).

The words data (``words_data``) is shared with tests/test_serve_words.py.
"""

import json
from pathlib import Path

import pytest

from dummies import SMALL, run, write_audio, write_image, write_manifest

SAID = ("payment", 17, "low")  # the demo's recorded clip: "my plan was downgraded because the automatic payment bounced"
SHOWN = ("Login failed", "Your password is wrong")


def speech_clip(path: Path, clip=SAID) -> Path:
    """A voice note that speaks: one of the demo's recorded clips (Ogg/Opus, shipped in pipeline/demo_voice/)."""
    from pipeline.demo import voice_clip

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(voice_clip(*clip).read_bytes())
    return path


def dialog_png(path: Path, lines=SHOWN, size=(480, 200)) -> Path:
    """An app's error dialog: a frame and lines of text in Pillow's own scalable font (no system fonts)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([10, 10, size[0] - 10, size[1] - 10], outline=(120, 120, 120), width=2)
    font = ImageFont.load_default(size=24)
    for n, line in enumerate(lines):
        draw.text((30, 40 + 50 * n), line, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def words_data(root: Path, *config: str) -> dict:
    """A manifest with a voice-only ticket that speaks SAID, a screenshot-only ticket showing SHOWN, typed
    tickets, a tone-only one (no words), and two typed "twins" whose messages are the transcript and the
    screen text as the pipeline read them; features computed into ``root/w``."""
    speech_clip(root / "aud" / "voice.ogg")
    dialog_png(root / "img" / "shot.png")
    rows = [
        {"id": "voice", "split": "train", "label": "a", "text": "", "image": "", "audio": "aud/voice.ogg"},
        {"id": "shot", "split": "train", "label": "b", "text": "", "image": "img/shot.png", "audio": ""},
        {"id": "food", "split": "train", "label": "a", "text": "the man is eating food",
         "image": str(write_image(root / "img" / "food.png", 1).relative_to(root)),
         "audio": str(write_audio(root / "aud" / "food.wav", 1).relative_to(root))},
        {"id": "horse", "split": "val", "label": "b", "text": "riding horse a piece of bread", "image": "", "audio": ""},
        {"id": "tone", "split": "test", "label": "a", "text": "",
         "image": "", "audio": str(write_audio(root / "aud" / "tone.wav", 2).relative_to(root))},
    ]
    manifest = write_manifest(root / "m.csv", rows)
    run(manifest, root / "w", *config)
    said, shown = _cached_words(root, manifest, config)
    rows += [{"id": "twin", "split": "val", "label": "a", "text": said, "image": "", "audio": ""},
             {"id": "screen_twin", "split": "val", "label": "b", "text": shown, "image": "", "audio": ""}]
    manifest = write_manifest(root / "m.csv", rows)
    run(manifest, root / "w", *config)  # only the twins' text is new
    return {"root": root, "manifest": manifest, "work": root / "w", "rows": rows, "said": said, "shown": shown}


def _cached_words(root, manifest, config) -> tuple[str, str]:
    from pipeline.config import Config
    from pipeline.manifest import load
    from pipeline.runner import Workspace
    from serving.search import Searcher

    ws = Workspace(root / "w", Config.load(None, SMALL + [s for s in config if not s.startswith("--")]))
    try:
        searcher = Searcher(ws, load([str(manifest)]))
        said, shown = searcher.transcript("voice"), searcher.screen_text("shot")
        assert searcher.transcript("tone") is None and searcher.screen_text("food") is None  # no words there
    finally:
        ws.close()
    # real speech and real text were read (tiny.en and PP-OCR; a word or two may differ, not these)
    assert "payment" in said.lower() and "downgraded" in said.lower(), said
    assert "password" in shown.lower() and "\n" in shown, shown
    return said, shown


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return words_data(tmp_path_factory.mktemp("words"))


def mmp(data, *args, capsys):
    from mmpipe_cli.commands import main

    argv = ["-m", str(data["manifest"]), "-w", str(data["work"]), "--quiet"]
    for s in SMALL:
        argv += ["--set", s]
    code = main([args[0], *argv, *args[1:]])
    out, err = capsys.readouterr()
    return code, out, err


def search(data, capsys, *args, expect=0):
    code, out, err = mmp(data, "search", "--json", *args, capsys=capsys)
    assert code == expect, err
    (answer,) = [json.loads(line) for line in out.splitlines()]
    return answer["results"], err


def by_id(results):
    return {r["id"]: r for r in results}


def test_the_search_and_the_cli_offer_the_same_modalities():
    from serving import search_cli
    from serving.search import CHOICES

    assert search_cli.CHOICES == CHOICES == ("all", "words", "text", "speech", "screen", "text_ml", "speech_ml", "screen_ml",
                                             "image", "audio")


def test_a_typed_query_finds_a_voice_only_ticket_by_what_its_note_says(data, capsys):
    results, err = search(data, capsys, "--text", data["said"], "-k", "2")
    hits = by_id(results)
    assert set(hits) == {"voice", "twin"} and not err  # the note, and the typed message saying the same
    voice = hits["voice"]
    assert (voice["matched"], voice["query_words"]) == ("speech", "text") and voice["score"] > 0.999
    assert voice["modalities"] == {"speech": pytest.approx(1, abs=1e-5), "speech_ml": pytest.approx(1, abs=1e-5)}
    assert voice["words"] == {"said": data["said"]}  # a voice-only ticket: no typed text, no screen text
    assert (hits["twin"]["matched"], hits["twin"]["words"]) == ("text", {"text": data["said"]})


def test_a_typed_query_finds_a_screenshot_only_ticket_by_what_its_screen_shows(data, capsys):
    results, _ = search(data, capsys, "--text", data["shown"], "-k", "2")
    shot = by_id(results)["shot"]
    assert (shot["matched"], shot["query_words"]) == ("screen", "text") and shot["score"] > 0.999
    assert shot["words"] == {"on_screen": data["shown"]}
    # the screen's words alone (one line of the dialog) rank the screenshot above the other tickets
    results, _ = search(data, capsys, "--text", SHOWN[1].lower(), "--modality", "words", "-k", "10")
    ranked = [r["id"] for r in results if r["id"] != "screen_twin"]
    assert ranked[0] == "shot", results


def test_one_text_space_is_compared_with_every_word_vector_of_the_query(data, capsys):
    results, _ = search(data, capsys, "--text", data["said"], "--modality", "speech")
    assert [r["id"] for r in results] == ["voice"]  # the only item with a transcript
    assert results[0]["modalities"].keys() == {"speech"} and results[0]["matched"] == "speech"
    results, _ = search(data, capsys, "--text", data["shown"], "--modality", "screen")
    assert [r["id"] for r in results] == ["shot"] and results[0]["matched"] == "screen"
    results, _ = search(data, capsys, "--text", data["said"], "--modality", "text", "-k", "1")
    assert [r["id"] for r in results] == ["twin"] and results[0]["modalities"].keys() == {"text"}


def test_a_voice_query_finds_a_typed_ticket_about_the_same_thing(data, capsys):
    voice = str(data["root"] / "aud" / "voice.ogg")
    results, _ = search(data, capsys, "--audio", voice, "--modality", "text", "-k", "1")
    assert [r["id"] for r in results] == ["twin"]
    assert (results[0]["matched"], results[0]["query_words"]) == ("text", "speech") and results[0]["score"] > 0.999
    # all channels: the note itself first (its words and its sound), the typed twin by its words alone
    results, _ = search(data, capsys, "--audio", voice, "-k", "3")
    hits = by_id(results)
    assert results[0]["id"] == "voice" and results[0]["score"] > 0.999
    assert hits["twin"]["score"] == pytest.approx(hits["twin"]["modalities"]["text"] / 2, abs=1e-6)
    # a screenshot query: the typed message that says what the screen shows
    results, _ = search(data, capsys, "--image", str(data["root"] / "img" / "shot.png"), "--modality", "words", "-k", "2")
    hits = by_id(results)
    assert set(hits) == {"shot", "screen_twin"} and hits["screen_twin"]["query_words"] == "screen"


def test_like_compares_an_items_words_with_every_text_space(data, capsys):
    code, out, err = mmp(data, "search", "--json", "--like", "voice", "--modality", "words", "-k", "1", capsys=capsys)
    assert code == 0, err
    (top,) = json.loads(out)["results"]
    assert (top["id"], top["matched"], top["query_words"]) == ("twin", "text", "speech") and top["score"] > 0.999
    code, out, err = mmp(data, "search", "--json", "--like", "twin", "-k", "1", capsys=capsys)
    (top,) = json.loads(out)["results"]
    assert (top["id"], top["matched"], top["query_words"]) == ("voice", "speech", "text")


def test_all_is_the_words_channels_best_plus_image_and_audio_over_the_querys_channels(data):
    from pipeline.config import Config
    from pipeline.manifest import load
    from pipeline.runner import Workspace
    from serving.query import QueryEncoder, query_item
    from serving.search import ML_WORDS, Searcher

    config = Config.load(None, SMALL)
    ws = Workspace(data["work"], config)
    try:
        searcher = Searcher(ws, load([str(data["manifest"])]))
        query = query_item("q", text=SHOWN[0], audio="aud/voice.ogg", base=str(data["root"]))
        (encoded,) = QueryEncoder(config).encode([query])
        assert {"text", "speech", "audio"} <= set(encoded.features)
        results = searcher.search(encoded, k=100)
    finally:
        ws.close()
    assert {r["id"] for r in results} == {r["id"] for r in data["rows"]}
    for r in results:
        words = [s for m, s in r["modalities"].items() if m in ML_WORDS]  # the words channel: multilingual
        expected = ((max(words) if words else 0) + r["modalities"].get("audio", 0)) / 2  # words + audio channels
        assert r["score"] == pytest.approx(expected, abs=2e-6), r
        assert (r["matched"] is None) == (not words)
        if words:
            # ("matched" names the item's text: text, speech or screen, in the family that scored it)
            assert r["modalities"][r["matched"] + "_ml"] == max(words) and r["query_words"] in ("text", "speech")
    assert "image" not in {m for r in results for m in r["modalities"]}  # the query has no screenshot
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)


def test_the_table_says_where_each_ticket_matched(data, capsys):
    from serving.search_cli import snippet

    code, out, _ = mmp(data, "search", "--text", data["said"], "-k", "3", capsys=capsys)
    assert code == 0
    rows = {line.split()[2]: line for line in out.splitlines()[2:]}
    assert rows["voice"].endswith("said: " + snippet(data["said"]))
    assert rows["twin"].endswith(snippet(data["said"])) and "said:" not in rows["twin"]
    code, out, _ = mmp(data, "search", "--text", data["shown"], "-k", "2", capsys=capsys)
    rows = {line.split()[2]: line for line in out.splitlines()[2:]}
    assert rows["shot"].endswith("on screen: " + " ".join(data["shown"].split()))  # lines joined by spaces
    code, out, _ = mmp(data, "search", "--audio", str(data["root"] / "aud" / "voice.ogg"), "-k", "1", capsys=capsys)
    assert out.splitlines()[1] == "  query said: " + snippet(data["said"])


def test_a_note_without_speech_is_no_words_not_an_error(data, capsys):
    tone = str(data["root"] / "aud" / "tone.wav")
    results, err = search(data, capsys, "--audio", tone, "-k", "2")
    assert err == ""  # no warning: the note simply has no words
    assert results[0]["id"] == "tone" and results[0]["modalities"].keys() == {"audio"} and results[0]["matched"] is None
    code, out, err = mmp(data, "search", "--audio", tone, "--modality", "speech", capsys=capsys)
    assert code == 2 and out == ""
    assert "no usable modality" in err and "speech: no words" in err and "NoWords" not in err


def test_incremental_updates_cover_the_word_spaces(data):
    from pipeline.config import Config
    from pipeline.manifest import load
    from pipeline.runner import Workspace
    from serving.search import Searcher

    ws = Workspace(data["work"], Config.load(None, SMALL))
    try:
        searcher = Searcher(ws, load([str(data["manifest"])]))
    finally:
        ws.close()
    assert {m: searcher._spaces[m].size for m in ("speech", "screen")} == {"speech": 1, "screen": 1}
    assert all(s["rebuilt"] is False and s["added"] == 0 for s in searcher.update_stats.values())
