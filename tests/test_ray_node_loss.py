"""A worker node removed from a real multi-node Ray cluster in the middle of a stage: the lost jobs are
redone elsewhere and the run finishes with the local engine's outputs, or it stops with a stage error,
keeps what was committed, and the next run finishes the rest. Either way nothing is committed twice and
no orphan shard survives the next run.
"""

import json
import sqlite3
import threading
import time

import pytest

from dummies import make_items, run, write_manifest
from test_ray import assert_same, exports, on, shard_files, start_cluster
from tiny_models import tiny_bert

pytestmark = pytest.mark.ray


def test_worker_node_lost_mid_stage(tmp_path):
    ray, cluster, workers = start_cluster(2)
    try:
        data = tmp_path / "data"
        m = write_manifest(data / "m.csv", make_items(data, 0, 48))
        # One item per batch and per job: 48 jobs, so the stage is still running when the node goes.
        small = ["--set", f'bert.model="{tiny_bert(tmp_path / "bert")}"', "--set", "bert.batch_size=1",
                 "--set", "cache.shard_rows=1", "--set", "ray.stages.bert.actors=2"]
        run(m, tmp_path / "w", *small, command="run clean_text")
        written = tmp_path / "w" / "cache" / "bert"
        removed = {}

        def remove_a_node_once_work_is_flowing():
            deadline = time.monotonic() + 300
            while not (written.is_dir() and any(written.iterdir())) and time.monotonic() < deadline:
                time.sleep(0.02)
            with sqlite3.connect(tmp_path / "w" / "cache" / "index.sqlite") as db:
                removed["committed"] = db.execute("SELECT count(*) FROM entries WHERE stage = 'bert'").fetchone()[0]
            cluster.remove_node(workers[0])
            removed["done"] = True

        killer = threading.Thread(target=remove_a_node_once_work_is_flowing)
        killer.start()
        try:
            report = run(m, tmp_path / "w", *small, *on(cluster), command="run bert")
        except AssertionError as exc:  # exit 3: the stage stopped
            assert "exited 3" in str(exc)
            report = json.loads((tmp_path / "w" / "runs" / "latest.json").read_text())
        killer.join()
        assert removed.get("done") and removed["committed"] < 48  # the node went while bert was running
        if report["stage_errors"]:  # stopped: committed work is kept; a new node joins, the next run finishes
            first = report["stages"]["bert"]["computed"]
            cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20)
            cluster.wait_for_nodes()
            report = run(m, tmp_path / "w", *small, *on(cluster), command="run bert")
            assert report["stages"]["bert"]["cached"] == first
        assert report["stage_errors"] == [] and report["failures"] == []
        assert report["stages"]["bert"]["computed"] + report["stages"]["bert"]["cached"] == 48
        run(m, tmp_path / "local", *small, command="run bert")
        assert run(m, tmp_path / "w", *small, command="run bert")["stages"]["bert"]["computed"] == 0  # cleans debris
        assert_same(exports(m, tmp_path / "w", tmp_path, ["bert"], small), exports(m, tmp_path / "local", tmp_path, ["bert"], small),
                    ["bert"])
        with sqlite3.connect(tmp_path / "w" / "cache" / "index.sqlite") as db:
            indexed = {n for (n,) in db.execute("SELECT name FROM shards")}
        assert shard_files(tmp_path / "w") == indexed  # no orphan of a lost job survives a run
    finally:
        ray.shutdown()
        cluster.shutdown()
