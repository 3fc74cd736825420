"""Jobs without Ray: workers that read their own inputs and write their own shards (``pipeline.jobs``),
run here by an in-process executor that passes descriptors and results through JSON as Ray does. The
driver commits each job once, a lost job's shard is an orphan the next run deletes, and a corrupt
upstream shard found by a worker is dropped and recomputed. Outputs equal the local engine's.
"""

import json

import numpy as np
import pandas as pd
import pytest

from dummies import make_items, run, write_manifest
from pipeline.executors import ENGINES
from pipeline.executors import Executor as Base
from pipeline.fs import Folder
from pipeline.jobs import ShardReader, batches_per_job, run_job

STAGES = ["clean_audio", "mfcc"]
ENGINE = ["--set", 'run.engine="inprocess"', "--set", "clean_audio.batch_size=2", "--set", "mfcc.batch_size=2"]
LOCAL = ["--set", "clean_audio.batch_size=2", "--set", "mfcc.batch_size=2"]


class Executor(Base):
    """Runs each job in this process; ``lose`` jobs are done (their shards written) but never answered,
    and job 0 answers twice, as a retried job can."""

    name = "inprocess"
    writes_shards = True
    lose: set[int] = set()
    facts = {"engine": "inprocess"}

    def prepare(self, stage):
        stage.ensure_ready()

    def slots(self, stage):
        return 2

    def run_jobs(self, stage, jobs, root):
        reader = ShardReader(Folder(root))
        for job in jobs:
            descriptor = json.loads(json.dumps(job))
            result = json.loads(json.dumps(run_job(stage, descriptor, reader, self.config["cache"])))
            if job["job"] in self.lose:
                continue
            yield result
            if job["job"] == 0:
                yield result


@pytest.fixture(autouse=True)
def inprocess_engine(monkeypatch):
    monkeypatch.setitem(ENGINES, "inprocess", __name__)
    Executor.lose = set()


def export(manifest, workdir, tmp_path, stage):
    path = tmp_path / f"{workdir.name}-{stage}.parquet"
    run(manifest, workdir, "--out", str(path), *LOCAL, command=f"export {stage}")
    return pd.read_parquet(path).set_index("id").sort_index()


def assert_identical(manifest, a, b, tmp_path):
    for stage in STAGES:
        x, y = export(manifest, a, tmp_path, stage), export(manifest, b, tmp_path, stage)
        assert list(x["key"]) == list(y["key"])
        field = "audio" if stage == "clean_audio" else stage
        for u, v in zip(x[field], y[field]):
            assert np.array_equal(np.asarray(u), np.asarray(v))  # same batches, same process: same bits


def shard_files(workdir):
    return sorted(p.name for p in (workdir / "cache").glob("*/*.parquet"))


def test_jobs_match_local_and_commit_each_job_once(tmp_path):
    rows = make_items(tmp_path / "data", 0, 9)
    (tmp_path / "data" / "aud" / "bad.wav").write_bytes(b"RIFF garbage")
    m = write_manifest(tmp_path / "data" / "m.csv", [{**r, "audio": "aud/bad.wav"} if i == 4 else r for i, r in enumerate(rows)])
    report = run(m, tmp_path / "jobs", *ENGINE, command="run mfcc")
    assert report["stages"]["clean_audio"]["computed"] == 8  # job 0 answered twice, counted once
    assert report["stages"]["mfcc"]["computed"] == 8
    assert [(f["stage"], f["id"]) for f in report["failures"]] == [("clean_audio", "item004")]
    assert report["info"]["mfcc"]["engine"] == "inprocess"
    run(m, tmp_path / "local", *LOCAL, command="run mfcc")
    assert_identical(m, tmp_path / "jobs", tmp_path / "local", tmp_path)


def test_shards_of_a_lost_job_are_orphans_the_next_run_deletes(tmp_path):
    data = tmp_path / "data"
    m = write_manifest(data / "m.csv", make_items(data, 0, 8))
    Executor.lose = {1}
    first = run(m, tmp_path / "jobs", *ENGINE, command="run clean_audio")
    assert first["stages"]["clean_audio"]["computed"] == 6  # 4 jobs of one batch of 2; job 1 never answered
    orphans = len(shard_files(tmp_path / "jobs"))
    assert orphans == 4  # its shard was written all the same
    Executor.lose = set()
    second = run(m, tmp_path / "jobs", *ENGINE, command="run clean_audio")
    assert (second["stages"]["clean_audio"]["computed"], second["stages"]["clean_audio"]["cached"]) == (2, 6)
    run(m, tmp_path / "local", *LOCAL, command="run mfcc")
    run(m, tmp_path / "jobs", *ENGINE, command="run mfcc")
    assert_identical(m, tmp_path / "jobs", tmp_path / "local", tmp_path)
    import sqlite3

    with sqlite3.connect(tmp_path / "jobs" / "cache" / "index.sqlite") as db:
        indexed = sorted(n.split("/")[1] for (n,) in db.execute("SELECT name FROM shards"))
    assert shard_files(tmp_path / "jobs") == indexed


def test_corrupt_upstream_shard_found_by_a_worker_is_dropped_and_recomputed(tmp_path):
    data = tmp_path / "data"
    m = write_manifest(data / "m.csv", make_items(data, 0, 4))
    run(m, tmp_path / "jobs", *LOCAL, command="run clean_audio")
    (shard,) = (tmp_path / "jobs" / "cache" / "clean_audio").glob("*.parquet")
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size: only the checksum can tell
    shard.write_bytes(bytes(raw))
    report = run(m, tmp_path / "jobs", *ENGINE, command="run mfcc")
    assert any(shard.name in w and "checksum" in w for w in report["warnings"])
    assert report["stages"]["clean_audio"]["computed"] == 4 and report["stages"]["mfcc"]["computed"] == 4
    run(m, tmp_path / "local", *LOCAL, command="run mfcc")
    assert_identical(m, tmp_path / "jobs", tmp_path / "local", tmp_path)


def test_jobs_hold_about_a_shard_each_but_spread_over_every_slot():
    assert batches_per_job(batch_size=32, n_batches=1600, slots=2, shard_rows=1024) == 32  # a shard's worth
    assert batches_per_job(batch_size=32, n_batches=19, slots=2, shard_rows=1024) == 3  # >= 4 jobs per slot
    assert batches_per_job(batch_size=2048, n_batches=5, slots=1, shard_rows=1024) == 1


def test_ray_settings_are_checked():
    from pipeline.config import Config
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown config key ray.window"):  # gone: one execution per stage
        Config.load(None, ["ray.window=16"])
    with pytest.raises(ConfigError, match="stages.cnn.actors must be an integer >= 1"):
        Config.load(None, ["ray.stages.cnn.actors=0"])
    with pytest.raises(ConfigError, match="stages.bert.num_gpus must be a number >= 0"):
        Config.load(None, ['ray.stages.bert.num_gpus="one"'])
    with pytest.raises(ConfigError, match="retries must be -1"):
        Config.load(None, ["ray.retries=-2"])
    assert Config.load(None, ["ray.stages.cnn.num_cpus=0.5"])["ray"].stages["cnn"]["num_cpus"] == 0.5


def test_a_cluster_refusing_the_driver_is_an_error_with_the_token_hint(monkeypatch):
    """`ray start --head` clusters use token authentication: a driver without RAY_AUTH_MODE=token cannot
    connect, and Ray only says "Failed to connect"; the executor adds what to set."""
    import ray

    from pipeline.config import Config
    from pipeline.executors.ray import Executor

    def refuse(address, **_):
        raise ConnectionError(f"Failed to connect to Ray cluster at {address}")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    remote = Executor(Config.load(None, ['ray.address="10.0.0.9:6379"']))
    with pytest.raises(ConnectionError, match=r"at 10.0.0.9:6379\. If the cluster was started with `ray start`.*RAY_AUTH_MODE=token"):
        remote.prepare(None)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # already set: Ray's own message alone
    with pytest.raises(ConnectionError, match=r"^Failed to connect to Ray cluster at 10.0.0.9:6379$"):
        remote.prepare(None)


def test_worker_shards_describe_themselves_and_outputs_are_checked(tmp_path, monkeypatch):
    from mmpipe_cli.commands import main
    from stages.mfcc import Mfcc

    original = Mfcc.process

    def sloppy(self, batch):  # item001's vector comes out one value short
        return [{"mfcc": r["mfcc"][:-1]} if b["id"] == "item001" else r for b, r in zip(batch, original(self, batch))]

    monkeypatch.setattr(Mfcc, "process", sloppy)
    data = tmp_path / "data"
    m = write_manifest(data / "m.csv", make_items(data, 0, 4))
    report = run(m, tmp_path / "w", *ENGINE, command="run mfcc")
    assert [(f["stage"], f["id"], f["error"]) for f in report["failures"]] == [("mfcc", "item001", "OutputMismatch")]
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (tmp_path / "w" / "cache" / name).unlink(missing_ok=True)
    assert main(["rebuild-index", "-m", str(m), "-w", str(tmp_path / "w"), *ENGINE]) == 0  # from worker-written shards
    again = run(m, tmp_path / "w", *ENGINE, command="run mfcc")
    assert again["stages"]["clean_audio"]["cached"] == 4 and again["stages"]["mfcc"]["cached"] == 3


def test_a_ray_worker_computes_with_its_num_cpus_threads_unless_threads_are_set():
    from pipeline.executors.ray import worker_section

    assert worker_section({"model": "m", "threads": 0}, 1) == {"model": "m", "threads": 1}
    assert worker_section({"threads": 3}, 1) == {"threads": 3}
    assert worker_section({"max_chars": 10}, 2) == {"max_chars": 10}  # a stage without the setting
