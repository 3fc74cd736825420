"""Every bad input is either cleaned correctly or a named per-item error; the run completes; good items'
outputs do not depend on the bad items being there."""

import numpy as np
import pandas as pd
import pytest

import bad_inputs
from dummies import ALL_STAGES, make_items, run, small_args, write_manifest
from mmpipe_cli.commands import main
from pipeline.errors import ManifestError
from pipeline.manifest import load

CAP = [a for cap in bad_inputs.CAPS for a in ("--set", cap)]
MODEL_STAGES = {"bert", "cnn"}  # mfcc is batch-invariant: compared bit for bit


def export(manifest, workdir, stage, tmp_path):
    out = tmp_path / f"{workdir.name}-{stage}.parquet"
    run(manifest, workdir, *CAP, "--out", str(out), command=f"export {stage}")
    return pd.read_parquet(out).set_index("id")


def test_bad_input_corpus(tmp_path):
    data = tmp_path / "data"
    good = make_items(data, 0, 4)
    entries = bad_inputs.build(data)
    rows = good + [{"id": i, "split": "train", "label": "a", column: value} for i, column, value, _ in entries]
    mixed = write_manifest(data / "mixed.csv", rows)
    clean = write_manifest(data / "good.csv", good)

    report = run(mixed, tmp_path / "mixed", *CAP)  # exit 0: item failures are reported, not fatal
    failures = {f["id"]: f for f in report["failures"]}
    assert main(["features", "-m", str(mixed), "-w", str(tmp_path / "mixed"), "-q", "--strict", *small_args(*CAP)]) == 1

    exports = {s: export(mixed, tmp_path / "mixed", s, tmp_path) for s in ALL_STAGES}
    for item_id, column, _, expect in entries:
        stage = {"image": "clean_image", "audio": "clean_audio"}.get(column, "clean_text")
        feature = {"clean_image": "cnn", "clean_audio": "mfcc", "clean_text": "bert"}[stage]
        if expect == "ok":
            assert item_id not in failures, failures.get(item_id)
            assert item_id in exports[stage].index and item_id in exports[feature].index
        else:  # exactly the outcome README's table names, with the item and the cause in the message
            f = failures[item_id]
            assert (f["stage"], f["error"]) == expect[:2], f
            assert f["message"].startswith(f"item {item_id}: ") and expect[2] in f["message"], f
            assert item_id not in exports[stage].index
    assert set(failures) == {e[0] for e in entries if e[3] != "ok"}  # no good item failed
    # Refused before reading: an oversized file is never even hashed.
    import sqlite3

    hashed = {p for (p,) in sqlite3.connect(tmp_path / "mixed" / "cache" / "raw_hashes.sqlite").execute("SELECT path FROM raw_files")}
    assert str((data / "img" / "oversize.png").resolve()) not in hashed and str((data / "img" / "cmyk.jpg").resolve()) in hashed

    # Odd-but-valid inputs come out right.
    img = exports["clean_image"]
    assert img.loc["img_cmyk", "image"].reshape(-1, 3)[:, 0].mean() > 200  # CMYK red stays red
    text = exports["clean_text"]["text"]
    assert len(text["txt_huge"]) == 20000 and text["txt_emoji"] == "app crashed again 😡👨‍👩‍👧"
    assert text["txt_html"] == "Refund & invoice" and text["txt_control"] == "bell null escape [31m red"
    assert text["txt_rtl"] == "مرحبا، لا أستطيع تسجيل الدخول"

    # Good items: the same outputs as in a run without the bad items. Cleaning is per item and
    # bit-identical; model stages batch items together, and float sums depend on the batch's other
    # members, so they agree to float rounding.
    run(clean, tmp_path / "clean", *CAP)
    for stage in ALL_STAGES:
        alone = export(clean, tmp_path / "clean", stage, tmp_path)
        field = {"clean_text": "text", "clean_image": "image", "clean_audio": "audio"}.get(stage, stage)
        for item_id in alone.index:
            a, b = alone.loc[item_id, field], exports[stage].loc[item_id, field]
            if stage in MODEL_STAGES:
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5 * np.abs(a).max())
            else:
                assert (a == b) if isinstance(a, str) else np.array_equal(a, b), (stage, item_id)


@pytest.mark.parametrize("problem", ["duplicate id", "unknown split"])
def test_manifest_level_problems_stop_before_any_work(tmp_path, problem, capsys):
    data = tmp_path / "data"
    rows = make_items(data, 0, 3)
    if problem == "duplicate id":
        rows[2]["id"] = rows[0]["id"]
    else:
        rows[1]["split"] = "holdout"
    m = write_manifest(data / "m.csv", rows)
    with pytest.raises(ManifestError, match=problem):
        load(str(m))
    assert main(["features", "-m", str(m), "-w", str(tmp_path / "w"), "-q"]) == 2
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "w" / "cache").exists()
