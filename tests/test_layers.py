"""The layers: mmpipe_cli (the command line, the wiring) -> serving -> stages -> pipeline (the core). Every
import statement counts — module-level, lazy (inside a function) and ``TYPE_CHECKING`` ones — read from
the sources with ``ast``: no package imports one above it, and no modules import each other in a circle.
The one exception is ``pipeline/__main__.py``, the script behind ``python -m pipeline``, which hands over
to mmpipe_cli and is imported by no module. Executors are chosen by name; dataset-level stages (fuse,
train) run through the same runner and CLI paths as per-item stages."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dummies import make_items, run, write_manifest
from imports import SHIPPED, cycles, module_graph

ROOT = Path(__file__).resolve().parent.parent
RANK = {package: rank for rank, package in enumerate(SHIPPED)}  # pipeline 0, stages 1, serving 2, mmpipe_cli 3
SCRIPT = "pipeline.__main__"  # python -m pipeline: a script, not a module of the core


def test_every_import_points_down_the_layers():
    graph = module_graph(ROOT)
    assert {"pipeline.engines", "pipeline.inputs", "mmpipe_cli.commands"} <= set(graph)
    up = [f"{m} imports {t}" for m, targets in sorted(graph.items()) for t in sorted(targets)
          if RANK[t.split(".")[0]] > RANK[m.split(".")[0]] and m != SCRIPT]
    assert up == []
    assert graph[SCRIPT] == {"mmpipe_cli.commands"}
    assert [m for m, targets in graph.items() if SCRIPT in targets] == []
    # the four-file circle that was: config -> executors -> config / stage -> dataset -> config
    assert "pipeline.executors" not in graph["pipeline.config"]
    assert "pipeline.engines" in graph["pipeline.config"] and "pipeline.engines" in graph["pipeline.executors"]


def test_no_modules_import_each_other_in_a_circle():
    assert cycles(module_graph(ROOT)) == []


def test_the_checks_see_lazy_and_type_checking_imports(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "__init__.py").write_text("")
    (tmp_path / "a" / "x.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .y import Y\n")
    (tmp_path / "a" / "y.py").write_text("def f():\n    from a import x\n")
    assert cycles(module_graph(tmp_path, ("a",))) == [["a.x", "a.y"]]


def test_loading_the_core_loads_no_stage_module():
    code = ("import sys\nimport pipeline.runner, pipeline.config, pipeline.store, pipeline.plan, pipeline.stage, "
            "pipeline.executors.local, pipeline.export, pipeline.status\n"
            "print([m for m in sys.modules if m.split('.')[0] in ('stages', 'serving')])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_config_sections_come_from_registered_stages():
    from pipeline.config import SECTIONS
    from pipeline.stage import STAGES

    assert {"clean_text", "bert", "cnn", "mfcc", "fuse", "train"} <= set(STAGES)
    assert all(SECTIONS[cls.section()] is cls.Config for cls in STAGES.values())
    # bert_speech and bert_screen run the [bert] model on transcripts and screen text, multilingual_speech and
    # multilingual_screen the [multilingual] one: no section of their own
    assert {name for name, cls in STAGES.items() if cls.config_section} == {"bert_speech", "bert_screen",
                                                                            "multilingual_speech", "multilingual_screen"}
    assert "bert_speech" not in SECTIONS and "bert_screen" not in SECTIONS
    assert {name for name, cls in STAGES.items() if cls.holds_model} == {"bert", "cnn", "transcribe", "ocr", "bert_speech", "bert_screen",
                                                                         "multilingual", "multilingual_speech", "multilingual_screen"}


def test_executors_are_chosen_by_name():
    from pipeline.config import Config
    from pipeline.errors import ConfigError
    from pipeline.executors import get_executor

    config = Config.load(None, [])
    assert get_executor("local", config).name == "local"
    assert get_executor("ray", config).name == "ray"  # the module loads; Ray itself starts only when used
    with pytest.raises(ConfigError, match="engine must be one of local, ray"):
        Config.load(None, ['run.engine="spark"'])


def test_unknown_stage_is_one_typed_error_with_a_hint(tmp_path, capsys):
    from mmpipe_cli.commands import main

    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 1))
    for argv in (["run", "mfc"], ["export", "mfc", "--out", str(tmp_path / "x.parquet")], ["status", "--stage", "mfc"]):
        assert main([*argv, "-m", str(m), "-w", str(tmp_path / "w"), "-q"]) == 2
        assert "unknown stage 'mfc' (did you mean 'mfcc'?)" in capsys.readouterr().err


def test_workspace_is_a_context_manager_that_releases_its_lock(tmp_path):
    from pipeline.config import Config
    from pipeline.runner import Workspace

    config = Config.load(None, ["run.lock_timeout=0"])
    with Workspace(tmp_path / "w", config) as ws:
        ws.lock("first")
    with Workspace(tmp_path / "w", config) as ws:  # would wait, then refuse, if the lock were still held
        ws.lock("second")


def test_fuse_and_train_are_planned_run_and_exported_through_the_ordinary_paths(tmp_path, capsys):
    from mmpipe_cli.commands import main

    from dummies import SMALL

    data = tmp_path / "data"
    m = write_manifest(data / "m.csv", make_items(data, 0, 6))
    first = run(m, tmp_path / "w", command="run fuse")
    assert first["stages"]["fuse"]["computed"] == 6 and first["stages"]["fuse"]["seconds"] > 0
    assert first["fuse"]["statistics"] == "fitted on 2 train items"
    again = run(m, tmp_path / "w", command="run fuse")
    assert again["stages"]["fuse"]["computed"] == 0 and again["stages"]["fuse"]["cached"] == 6
    assert sum(s["computed"] for s in again["stages"].values()) == 0
    out = tmp_path / "fuse.parquet"
    run(m, tmp_path / "w", "--out", str(out), command="export fuse")
    frame = pd.read_parquet(out)
    assert sorted(frame["id"]) == [f"item{i:03d}" for i in range(6)]
    assert set(frame["text_mask"]) == {1.0} and len(frame["audio"].iloc[0]) == 26

    capsys.readouterr()
    args = ["status", "-m", str(m), "-w", str(tmp_path / "w"), "--stage", "train"]
    for s in SMALL:
        args += ["--set", s]
    assert main(args) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "fresh      6" in lines["fuse"] and "to compute      0" in lines["fuse"]
    assert "to train: model" in lines["train"]
    with pytest.raises(AssertionError, match="exited 2"):  # a model folder is not rows to export
        run(m, tmp_path / "w", "--out", str(tmp_path / "t.parquet"), command="export train")
