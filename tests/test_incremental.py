"""The cache's promises, through the real CLI: exactly the affected items in exactly the affected stages."""

import json
import os
import subprocess
import sys

import pandas as pd

from dummies import ALL_STAGES as STAGES, counts, make_items, only, run, small_args, write_audio, write_manifest


def test_first_run_then_noop(tmp_path):
    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 6))
    first = run(m, tmp_path / "w")
    assert counts(first, "computed") == {s: 6 for s in STAGES}
    assert first["failures"] == []
    second = run(m, tmp_path / "w")
    assert counts(second, "computed") == {s: 0 for s in STAGES}
    assert counts(second, "cached") == {s: 6 for s in STAGES}


def test_add_k_items_computes_exactly_k(tmp_path):
    data = tmp_path / "data"
    rows = make_items(data, 0, 6)
    run(write_manifest(data / "m.csv", rows), tmp_path / "w")
    new = write_manifest(data / "new.csv", make_items(data, 6, 3))
    report = run([data / "m.csv", new], tmp_path / "w")
    assert counts(report, "computed") == {s: 3 for s in STAGES}
    assert counts(report, "cached") == {s: 6 for s in STAGES}


def test_mfcc_setting_change_recomputes_mfcc_only(tmp_path):
    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 5))
    run(m, tmp_path / "w")
    report = run(m, tmp_path / "w", "--set", "mfcc.n_mfcc=8")
    assert counts(report, "computed") == only(mfcc=5)
    # An execution-only setting changes nothing.
    report = run(m, tmp_path / "w", "--set", "mfcc.n_mfcc=8", "--set", "mfcc.batch_size=2")
    assert counts(report, "computed") == {s: 0 for s in STAGES}


def test_changed_raw_file_recomputes_that_item_downstream(tmp_path):
    data = tmp_path / "data"
    m = write_manifest(data / "m.csv", make_items(data, 0, 5))
    run(m, tmp_path / "w")
    write_audio(data / "aud" / "2.wav", seed=99)  # new content, same path
    report = run(m, tmp_path / "w")
    assert counts(report, "computed") == only(clean_audio=1, mfcc=1)


def test_status_explains_why(tmp_path, capsys):
    from mmpipe_cli.commands import main

    data = tmp_path / "data"
    m = write_manifest(data / "m.csv", make_items(data, 0, 4))
    run(m, tmp_path / "w")
    write_audio(data / "aud" / "1.wav", seed=77)
    m2 = write_manifest(data / "m2.csv", make_items(data, 4, 2))
    capsys.readouterr()
    main(["status", "-m", str(m), "-m", str(m2), "-w", str(tmp_path / "w"), *small_args("--set", "mfcc.n_mfcc=7")])
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "fresh      4" in lines["clean_image"] and "2 new item" in lines["clean_image"]
    assert "1 changed input" in lines["clean_audio"]
    assert "4 config change" in lines["mfcc"] and "2 new item" in lines["mfcc"]


def test_keys_stable_across_processes(tmp_path):
    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 3))
    code = (
        "import json,sys; sys.path[:0]=[{root!r}, {tests!r}]\n"
        "from dummies import SMALL\n"
        "from pipeline.config import Config\nfrom pipeline.manifest import load\nfrom pipeline.runner import Workspace\n"
        "cfg=Config.from_dict({{}}) if False else Config.load(None, SMALL)\n"
        "from dummies import run\nimport pathlib\nrun(pathlib.Path({m!r}), pathlib.Path(sys.argv[1]), command='run mfcc')\n"
        "ws=Workspace(sys.argv[1], cfg)\n"
        "print(json.dumps({{p.stage.name: p.keys for p in ws.plan(['mfcc','bert','cnn'], load({m!r}), dry=True)}}, sort_keys=True))\n"
    ).format(root=os.getcwd(), tests=os.path.dirname(__file__), m=str(m))
    outs = [
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"w{i}")], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": str(i)}).stdout
        for i in (1, 2)
    ]
    assert outs[0] == outs[1]
    keys = json.loads(outs[0])
    assert set(keys) == set(STAGES) and len(keys["mfcc"]) == 3 and len(keys["clean_text"]) == 3
    assert keys["bert"] == {}  # derived from clean_text's output digests, which do not exist before it runs


def test_export_is_readable_by_pandas(tmp_path):
    from mmpipe_cli.commands import main

    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 4))
    run(m, tmp_path / "w")
    out = tmp_path / "mfcc.parquet"
    args = ["export", "mfcc", "--out", str(out), "-m", str(m), "-w", str(tmp_path / "w")]
    for s in ["clean_image.size=32", "clean_audio.duration=0.5", "clean_audio.sample_rate=8000", "mfcc.n_fft=256",
              "mfcc.hop_length=128", "mfcc.n_mels=32", "mfcc.n_mfcc=13"]:
        args += ["--set", s]
    assert main(args) == 0
    df = pd.read_parquet(out)
    assert sorted(df["id"]) == [f"item{i:03d}" for i in range(4)]
    assert len(df["mfcc"].iloc[0]) == 26


def test_gc_removes_exactly_the_unreferenced_entries(tmp_path, capsys):
    from test_cache_commands import committed

    data = tmp_path / "data"
    m = write_manifest(data / "m.csv", make_items(data, 0, 4))
    run(m, tmp_path / "w")
    old = committed(tmp_path / "w")
    run(m, tmp_path / "w", "--set", "mfcc.n_mfcc=8")
    both = committed(tmp_path / "w")
    new_mfcc = both["mfcc"] - old["mfcc"]
    assert len(old["mfcc"]) == len(new_mfcc) == 4 and {s: k for s, k in both.items() if s != "mfcc"} == {
        s: k for s, k in old.items() if s != "mfcc"}
    files = sorted(p.name for p in (tmp_path / "w" / "cache").rglob("*.parquet"))
    capsys.readouterr()
    run(m, tmp_path / "w", "--set", "mfcc.n_mfcc=8", command="gc --dry-run")
    out = capsys.readouterr().out
    would = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert would.pop("raw-file hashes") == "0 would be forgotten"  # the same manifest: every file still named
    assert set(STAGES) <= set(would) and would.pop("mfcc") == "4 entries would be removed"
    assert set(would.values()) == {"0 entries would be removed"}  # every other stage, fuse and train included
    assert committed(tmp_path / "w") == both and sorted(p.name for p in (tmp_path / "w" / "cache").rglob("*.parquet")) == files
    run(m, tmp_path / "w", "--set", "mfcc.n_mfcc=8", command="gc")
    assert committed(tmp_path / "w") == {**both, "mfcc": new_mfcc}  # the old setting's entries only
    assert len(list((tmp_path / "w" / "cache" / "mfcc").iterdir())) == 1  # compacted
    report = run(m, tmp_path / "w", "--set", "mfcc.n_mfcc=8")
    assert counts(report, "computed") == {s: 0 for s in STAGES}


def test_gc_forgets_hashes_of_files_no_manifest_names_and_keeps_unchanged_plans(tmp_path, capsys, monkeypatch):
    """The raw-hash memo would otherwise grow forever (every file ever planned). What gc keeps: every file
    and model file the given manifests' plans look up; a later no-op rehashes nothing. A stage whose
    recorded items all survive keeps its recorded plan (the next no-op needs no item-by-item compare)."""
    import sqlite3

    data, work = tmp_path / "data", tmp_path / "w"
    items = make_items(data, 0, 4)
    everything = write_manifest(data / "all.csv", items)
    half = write_manifest(data / "half.csv", items[:2])
    run(everything, work)
    memo, index = work / "cache" / "raw_hashes.sqlite", work / "cache" / "index.sqlite"

    def rows(db, sql):
        with sqlite3.connect(db) as c:
            return c.execute(sql).fetchall()

    paths = {p for (p,) in rows(memo, "SELECT path FROM raw_files")}
    gone = {p for p in paths if any(f"/{i}." in p for i in (2, 3))}  # items 2 and 3's image and audio files
    assert len(gone) == 4
    capsys.readouterr()
    run(everything, work, command="gc")
    assert "0 hashes of files no manifest names" in capsys.readouterr().out
    plans = rows(index, "SELECT stage, digest FROM plans")
    assert len(plans) >= 6 and {p for (p,) in rows(memo, "SELECT path FROM raw_files")} == paths
    run(everything, work, command="gc")  # nothing removed: the recorded plans stay
    assert rows(index, "SELECT stage, digest FROM plans") == plans
    run(half, work, command="gc --dry-run")
    assert "raw-file hashes: 4 would be forgotten" in capsys.readouterr().out
    assert {p for (p,) in rows(memo, "SELECT path FROM raw_files")} == paths  # a dry run changes nothing
    run(half, work, command="gc")
    assert "4 hashes of files no manifest names" in capsys.readouterr().out
    assert {p for (p,) in rows(memo, "SELECT path FROM raw_files")} == paths - gone
    import pipeline.keys as keys

    hashed = []
    real = keys.digest_file
    monkeypatch.setattr(keys, "digest_file", lambda path: hashed.append(path) or real(path))
    report = run(half, work)
    assert counts(report, "computed") == {s: 0 for s in STAGES} and hashed == []


def test_noop_run_imports_no_deep_learning_framework_nor_numpy(tmp_path):
    """A no-op run is planning only: the real CLI, in a fresh process, imports no deep-learning library,
    and not even numpy or pyarrow (only a stage that computes, or a shard read, needs them)."""
    m = write_manifest(tmp_path / "data" / "m.csv", make_items(tmp_path / "data", 0, 3))
    run(m, tmp_path / "w")
    args = ["features", "--manifest", str(m), "--workdir", str(tmp_path / "w"), "--quiet", *small_args()]
    code = (
        "import sys; sys.path[:0]=[{root!r}]\n"
        "from mmpipe_cli.commands import main\nassert main({args!r}) == 0\n"
        "heavy=[n for n in ('tensorflow','torch','librosa','transformers','keras','numpy','pyarrow','pandas') if n in sys.modules]\n"
        "print(heavy)"
    ).format(root=os.getcwd(), args=args)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
