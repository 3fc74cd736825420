"""The bundled demo end to end with the default config (minutes): make train's promise that fusion beats every
single modality."""

import json

import pytest

from mmpipe_cli.commands import main

pytestmark = pytest.mark.heavy


def test_demo_fused_model_beats_every_single_modality(tmp_path):
    assert main(["demo-data", "--out", str(tmp_path / "demo")]) == 0
    m = str(tmp_path / "demo" / "demo.csv")
    assert main(["train", "-m", m, "-w", str(tmp_path / "w"), "-q"]) == 0
    report = json.loads((tmp_path / "w" / "runs" / "latest.json").read_text())
    assert {(f["stage"], f["error"]) for f in report["failures"]} == {
        ("clean_text", "TextDecodeError"), ("clean_image", "ImageDecodeError"), ("clean_audio", "EmptyAudio")}
    assert "ImageNet" in report["info"]["cnn"]["weights"]  # the default: real image features, offline
    # The words: every recorded voice note and every drawn dialog, and nothing invented on the hums and plain screens.
    assert report["stages"]["transcribe"]["computed"] == 48 and report["stages"]["ocr"]["computed"] == 48
    assert report["no_output"]["transcribe"]["NoWords"] > 600 and report["no_output"]["ocr"]["NoWords"] > 600
    ablation = json.loads((tmp_path / "w" / "models" / "latest" / "metrics.json").read_text())["ablation"]
    assert ablation["fused"] >= max(ablation["text"], ablation["image"], ablation["audio"]) + 0.05
    assert ablation["fused"] >= ablation["fused_without_words"]
    # A second run computes nothing and reuses the model.
    assert main(["train", "-m", m, "-w", str(tmp_path / "w"), "-q"]) == 0
    again = json.loads((tmp_path / "w" / "runs" / "latest.json").read_text())
    assert all(s["computed"] == 0 for s in again["stages"].values()) and again["train"]["cached"]
