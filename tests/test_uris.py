"""Data and cache on URIs (fsspec): an in-memory filesystem stands in for s3:// or gs://."""

import fsspec
import pytest

from dummies import ALL_STAGES, counts, make_items, only, run, write_image, write_manifest


@pytest.fixture
def memfs():
    fs = fsspec.filesystem("memory")
    for path in ("/data", "/cache", "/outside"):
        if fs.exists(path):
            fs.rm(path, recursive=True)
    return fs


def upload(fs, local_root, rows):
    """Copy the generated files and a manifest into memory://data."""
    for row in rows:
        for column in ("image", "audio"):
            fs.pipe_file(f"/data/{row[column]}", (local_root / row[column]).read_bytes())
    write_manifest(local_root / "m.csv", rows)
    fs.pipe_file("/data/m.csv", (local_root / "m.csv").read_bytes())
    return "memory://data/m.csv"


def test_data_and_cache_on_uris(tmp_path, memfs):
    rows = make_items(tmp_path / "local", 0, 4)
    manifest = upload(memfs, tmp_path / "local", rows)
    cache = ["--set", 'cache.root="memory://cache"']
    first = run(manifest, tmp_path / "w", *cache)
    assert counts(first, "computed") == {s: 4 for s in ALL_STAGES} and first["failures"] == []
    assert memfs.find("/cache/mfcc") and not list((tmp_path / "w" / "cache").glob("*/*.parquet"))
    assert counts(run(manifest, tmp_path / "w", *cache), "computed") == {s: 0 for s in ALL_STAGES}

    # An edited object is noticed; only its item is recomputed.
    memfs.pipe_file(f"/data/{rows[1]['image']}", write_image(tmp_path / "new.png", seed=99).read_bytes())
    report = run(manifest, tmp_path / "w", *cache)
    assert counts(report, "computed") == only(clean_image=1, cnn=1)

    out = tmp_path / "mfcc.parquet"
    run(manifest, tmp_path / "w", *cache, "--out", str(out), command="export mfcc")
    import pandas as pd

    assert len(pd.read_parquet(out)) == 4


def test_uri_paths_cannot_escape_the_data_root(tmp_path, memfs):
    rows = make_items(tmp_path / "local", 0, 2)
    upload(memfs, tmp_path / "local", rows)
    memfs.pipe_file("/outside/secret.wav", b"RIFF")
    rows[1]["audio"] = "../outside/secret.wav"
    write_manifest(tmp_path / "local" / "m2.csv", rows)
    memfs.pipe_file("/data/m2.csv", (tmp_path / "local" / "m2.csv").read_bytes())
    report = run("memory://data/m2.csv", tmp_path / "w")
    assert [(f["id"], f["error"]) for f in report["failures"]] == [("item001", "PathEscapesRoot")]
