"""The lighter start (issue 20): once the ONNX graphs are cached under WORKDIR/models/, a run that adds a
few items loads no deep-learning framework. The real CLI with the default models (MiniLM on ONNX Runtime,
USE-multilingual, ImageNet EfficientNet-Lite0 on ONNX Runtime), each run in a fresh process (this one may
hold a loaded session of the same model, which would skip writing the graph): the first exports the
graphs (torch may load there); the one after rows are added has its ``sys.modules`` read once it is done."""

import json
import subprocess
import sys
from pathlib import Path

from dummies import write_image, write_manifest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "torch", "transformers", "keras", "librosa")
MESSAGES = ["I was charged twice for my order", "refund my payment please", "the app crashes when I open it",
            "cannot log in, password reset email never arrives", "my account is locked", "无法登录我的账户",
            "付款失败了", "where is my invoice for last month?", "dark mode makes the screen unreadable",
            "la aplicación se cierra sola"]


def texts(start: int, count: int) -> list[dict[str, str]]:
    return [{"id": f"t{i:03d}", "text": f"{MESSAGES[i % len(MESSAGES)]} (ticket {i})"} for i in range(start, start + count)]


def images(root: Path, start: int, count: int) -> list[dict[str, str]]:
    return [{"id": f"i{i:03d}", "image": str(write_image(root / "img" / f"{i}.png", i).relative_to(root))}
            for i in range(start, start + count)]


def args(manifest: Path, workdir: Path) -> list[str]:
    # an empty config file: the defaults in code, whatever pipeline.toml the current directory holds
    config = workdir.parent / "empty.toml"
    config.touch()
    return ["features", "--manifest", str(manifest), "--workdir", str(workdir), "--config", str(config), "--quiet"]


def fresh_run(manifest: Path, workdir: Path) -> tuple[dict, list[str]]:
    """(the run report, the HEAVY modules loaded) of the real CLI in a new interpreter."""
    code = ("import sys; sys.path[:0] = [{root!r}]\n"
            "from mmpipe_cli.commands import main\nassert main({args!r}) == 0\n"
            "import json; print(json.dumps([n for n in {heavy!r} if n in sys.modules]))").format(root=str(ROOT), args=args(manifest, workdir),
                                                                       heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir.parent, capture_output=True, text=True, check=True)
    return json.loads((workdir / "runs" / "latest.json").read_text()), json.loads(out.stdout.strip().splitlines()[-1])


def test_text_rows_added_load_no_framework(tmp_path):
    data, workdir = tmp_path / "data", tmp_path / "w"
    manifest = write_manifest(data / "m.csv", texts(0, 30))
    first, _ = fresh_run(manifest, workdir)
    assert first["stages"]["bert"]["computed"] == first["stages"]["multilingual"]["computed"] == 30
    assert list((workdir / "models" / "bert").glob("*.onnx"))

    write_manifest(manifest, texts(0, 35))
    report, heavy = fresh_run(manifest, workdir)
    assert heavy == []
    for stage in ("clean_text", "bert", "multilingual"):
        assert (report["stages"][stage]["computed"], report["stages"][stage]["cached"]) == (5, 30), stage
    assert report["failures"] == [] and report["stage_errors"] == []
    assert report["info"]["bert"]["runtime"] == "onnxruntime"
    assert report["info"]["bert"]["onnx"].startswith("cached ")


def test_image_rows_added_load_no_framework(tmp_path):
    data, workdir = tmp_path / "data", tmp_path / "w"
    manifest = write_manifest(data / "m.csv", images(data, 0, 12))
    first, _ = fresh_run(manifest, workdir)
    assert first["stages"]["cnn"]["computed"] == 12
    assert list((workdir / "models" / "backbones").glob("*.onnx"))

    write_manifest(manifest, images(data, 0, 15))
    report, heavy = fresh_run(manifest, workdir)
    assert heavy == []
    for stage in ("clean_image", "cnn"):
        assert (report["stages"][stage]["computed"], report["stages"][stage]["cached"]) == (3, 12), stage
    assert report["failures"] == [] and report["stage_errors"] == []
    assert report["info"]["cnn"]["runtime"] == "onnxruntime"
    assert report["info"]["cnn"]["onnx"].startswith("cached ")
