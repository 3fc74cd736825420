"""The Ray engine: same keys and values as the local engine, shared cache both ways, per-item errors."""

import numpy as np
import pandas as pd
import pytest

from dummies import ALL_STAGES, counts, make_items, only, run, write_manifest

pytestmark = pytest.mark.ray
RAY = ["--engine", "ray", "--set", "ray.num_cpus=2"]


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    pytest.importorskip("ray")
    yield
    import ray

    ray.shutdown()


def exports(manifest, workdir, tmp_path):
    out = {}
    for stage in ALL_STAGES:
        path = tmp_path / f"{workdir.name}-{stage}.parquet"
        run(manifest, workdir, "--out", str(path), command=f"export {stage}")
        out[stage] = pd.read_parquet(path).set_index("id").sort_index()
    return out


def test_ray_matches_local_and_reports_bad_items(tmp_path):
    data = tmp_path / "data"
    rows = make_items(data, 0, 6)
    (data / "img" / "bad.png").write_bytes(b"not a png")
    rows[2]["image"] = "img/bad.png"
    m = write_manifest(data / "m.csv", rows)
    on_ray = run(m, tmp_path / "ray", *RAY)
    assert [(f["stage"], f["id"], f["error"]) for f in on_ray["failures"]] == [("clean_image", "item002", "ImageDecodeError")]
    assert "item002" in on_ray["failures"][0]["message"]
    assert on_ray["info"]["cnn"]["engine"] == "ray"
    local = run(m, tmp_path / "local")
    assert counts(on_ray, "computed") == counts(local, "computed")
    a, b = exports(m, tmp_path / "ray", tmp_path), exports(m, tmp_path / "local", tmp_path)
    for stage in ALL_STAGES:
        assert list(a[stage]["key"]) == list(b[stage]["key"])  # same keys
        field = {"clean_text": "text", "clean_image": "image", "clean_audio": "audio"}.get(stage, stage)
        for x, y in zip(a[stage][field], b[stage][field]):
            if isinstance(x, str):
                assert x == y
            else:
                np.testing.assert_allclose(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), atol=1e-6)


def test_ray_and_local_resume_each_other(tmp_path):
    data = tmp_path / "data"
    rows = make_items(data, 0, 6)
    first, full = write_manifest(data / "first.csv", rows[:3]), write_manifest(data / "all.csv", rows)
    run(first, tmp_path / "w", *RAY)  # Ray does half of the items ...
    report = run(full, tmp_path / "w")  # ... the local engine finishes the rest
    assert counts(report, "computed") == {s: 3 for s in ALL_STAGES}
    assert counts(report, "cached") == {s: 3 for s in ALL_STAGES}

    more = write_manifest(data / "more.csv", rows + make_items(data, 6, 2))
    run(more, tmp_path / "w", command="run clean_image")  # local does one stage for the new items ...
    report = run(more, tmp_path / "w", *RAY)  # ... Ray picks up everything else
    assert counts(report, "computed") == {**only(clean_text=2, bert=2, cnn=2, clean_audio=2, mfcc=2)}
