"""Shared set-up of the serving tests: tiny data, a tiny trained model (built once per test session), the
app under TestClient, and a real uvicorn process (``mmp serve``) on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

from dummies import make_items, run, write_manifest

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["--set", "train.epochs=2", "--set", "train.ablation=false", "--set", "train.width=8", "--set", "train.head_width=8"]
_BUILT: dict[str, "Served"] = {}


@dataclass
class Served:
    root: Path  # data root: img/, aud/, the manifests
    manifest: Path  # what the model was trained on
    extra: Path  # unlabelled items served too: one whose image escapes the data root, one whose image is corrupt
    workdir: Path
    model: Path
    bert: str  # --set value naming the tiny BERT

    @property
    def manifests(self) -> list[str]:
        return [str(self.manifest), str(self.extra)]


def served_model(tmp_path_factory) -> Served:
    """Twelve tiny tickets in two classes, features with a tiny BERT, a 2-epoch model (once per session)."""
    if "model" not in _BUILT:
        from tiny_models import tiny_bert

        root = tmp_path_factory.mktemp("served")
        manifest = write_manifest(root / "m.csv", make_items(root, 0, 12))
        (root / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        extra = write_manifest(root / "extra.csv", [
            {"id": "escape", "split": "", "label": "", "text": "outside", "image": "../secret.png", "audio": ""},
            {"id": "corrupt", "split": "", "label": "", "text": "corrupt screenshot", "image": "img/corrupt.png", "audio": ""},
        ])
        bert = f"bert.model={tiny_bert(root / 'bert')}"
        run(manifest, root / "w", "--set", bert, *TRAIN, command="train")
        _BUILT["model"] = Served(root, manifest, extra, root / "w", (root / "w" / "models" / "latest").resolve(), bert)
    return _BUILT["model"]


def serve_config(**settings):
    from serving.settings import ServeConfig

    return replace(ServeConfig(), **settings)


def wait_ready(client, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get("/readyz")
        if r.status_code == 200:
            return r.json()
        if r.json().get("status") == "failed":
            raise AssertionError(f"service failed to load: {r.json()['error']}")
        time.sleep(0.1)
    raise AssertionError("service not ready in time")


def ticket(served: Served, n: int, text: str | None = None) -> dict:
    """The multipart files of item n of the training data (text as a form field)."""
    return {"text": (None, text if text is not None else f"message number {n} &amp; <b>bold</b>"),
            "image": (f"{n}.png", (served.root / "img" / f"{n}.png").read_bytes(), "image/png"),
            "audio": (f"{n}.wav", (served.root / "aud" / f"{n}.wav").read_bytes(), "audio/wav")}


def start_server(served: Served, *settings: str, token: str = "") -> tuple[subprocess.Popen, str]:
    """``mmp serve`` in its own process on a free port (``serving.launch``); returns once /readyz answers 200."""
    from serving.launch import launch

    args = ["--model", str(served.model), "-w", str(served.workdir), "-q"]
    for m in served.manifests:
        args += ["-m", m]
    for s in settings:
        args += ["--set", s]
    return launch(args, token=token, cwd=ROOT, env={"PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
