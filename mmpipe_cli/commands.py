"""Command line: ``mmp features | run STAGE | train | predict | status | export STAGE --out F | gc | verify |
rebuild-index | search | index | serve | demo-data``. The wiring layer: the one place where the core
(``pipeline``), the stages and serving meet; nothing imports it but its own ``__main__`` and the ``mmp``
console script.

Exit codes: 0 done (item failures are reported, not fatal); 1 item failures with --strict;
2 bad config, manifest or arguments; 3 a stage could not start (e.g. its model failed to load; the other
stages ran); 4 the work directory is locked by another run; 5 the work directory cannot be written
(disk full, permission denied; nothing half-written is committed); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from pipeline.engines import ENGINES
from pipeline.errors import PipelineError
from pipeline.inputs import DEFAULT_CONFIG, DEFAULT_MANIFEST, load_inputs, manifest_specs


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", "-m", action="append", help=f"manifest file or folder (repeatable; default {DEFAULT_MANIFEST})")
    p.add_argument("--workdir", "-w", default="work", help="work directory holding the cache and reports (default: work)")
    p.add_argument("--config", "-c", default=None, help=f"TOML config (default: {DEFAULT_CONFIG} if present)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting, e.g. --set mfcc.n_mfcc=20 (repeatable)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summary")
    p.add_argument("--engine", choices=list(ENGINES), default=None, help="run stages locally or on Ray Data (default: run.engine)")


def _run_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict", action="store_true", help="exit 1 if any item failed")
    p.add_argument("--retry-failed", action="store_true", help="also retry items whose failure is known for their unchanged input")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmp", description="Multimodal feature pipeline with a per-item content-addressed cache.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("features", help="clean every modality and extract all features (cached, incremental)")
    _common(p), _run_opts(p)
    p = sub.add_parser("run", help="run one stage plus whatever upstream work it still lacks")
    p.add_argument("stage", help="stage name (see 'mmp status')")
    _common(p), _run_opts(p)
    p = sub.add_parser("train", help="features (cached), fuse, then train the three-branch model (cached)")
    _common(p), _run_opts(p)
    p.add_argument("--force", action="store_true", help="train again even if this data + config has a model")
    p = sub.add_parser("predict", help="predict labels for new raw items with a trained model")
    _common(p), _run_opts(p)
    p.add_argument("--model", default=None, help="model folder (default: WORKDIR/models/latest)")
    p.add_argument("--out", "-o", default="predictions.csv", help="output .csv or .parquet (default: predictions.csv)")
    p = sub.add_parser("status", help="per stage: fresh / to compute / failed, and why")
    _common(p)
    p.add_argument("--stage", action="append", help="limit to these stages (and their inputs)")
    p = sub.add_parser("export", help="write id + one stage's outputs for the manifest's items to Parquet")
    p.add_argument("stage")
    p.add_argument("--out", "-o", required=True, help="output .parquet file")
    _common(p)
    p = sub.add_parser("gc", help="delete cache entries no current manifest + config references")
    _common(p)
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p = sub.add_parser("verify", help="check every cache shard's checksum; drop corrupt shards")
    _common(p)
    p = sub.add_parser("rebuild-index", help="recreate the cache index from the shards alone (failures are recomputed)")
    _common(p)
    from serving.search_cli import add_parsers  # search / index: their options live with the search code
    from serving.serve_cli import add_parsers as add_serve  # serve (also registers the [serve] section)

    add_parsers(sub, _common)
    add_serve(sub, _common)
    p = sub.add_parser("demo-data", help="generate the bundled demo's raw files (deterministic)")
    p.add_argument("--out", default="manifests", help="folder for demo.csv and demo_data/ (default: manifests)")
    p.add_argument("--items", type=int, default=600)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--force", action="store_true", help="regenerate even if present")
    return parser


def _load(args):
    return load_inputs(args.config, args.manifest, args.overrides, getattr(args, "engine", None))


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter, before it is imported
    args = build_parser().parse_args(argv)
    try:
        return (getattr(args, "handler", None) or COMMANDS[args.command])(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: committed work is kept; rerun to continue", file=sys.stderr)
        return 130
    except (OSError, sqlite3.OperationalError) as exc:
        print(f"error: cannot read or write the work directory: {exc}", file=sys.stderr)
        return 5


def _features() -> list[str]:
    """The CLI is where the stages are wired in: importing the package registers them (cheaply)."""
    import stages

    return list(stages.FEATURES)


def _print_run(report, path, workdir) -> None:
    print(report.summary())
    print(f"report: {path} (also {workdir / 'runs' / 'latest.json'})")


def cmd_run(args, targets: list[str] | None = None, force: tuple[str, ...] = ()) -> int:
    from pipeline.report import Report
    from pipeline.runner import Workspace
    from pipeline.stage import stage_class

    features = _features()
    if targets is None:
        stage_class(args.stage)  # an unknown name is a clear error before any work
        targets = [args.stage]
    if args.retry_failed:
        args.overrides.append("run.retry_permanent_failures=true")
    config, items = _load(args)
    report = Report(" ".join(sys.argv), quiet=args.quiet)
    with Workspace(args.workdir, config, force=force) as ws:
        try:
            ws.lock(report.data["command"])
            ws.run(targets or features, items, report)
        finally:
            path = report.write(ws.workdir)
    if not args.quiet:
        _print_run(report, path, ws.workdir)
        trained = report.data.get("train")
        if trained:
            note = " (reused: same fused data and config; --force to retrain)" if trained.get("cached") else ""
            print(f"model: {trained['run']}{note}")
            metrics = json.loads((Path(trained["run"]) / "metrics.json").read_text())
            print("test accuracy: " + ", ".join(f"{k} {v}" for k, v in metrics["ablation"].items()))
            for model, split in metrics.get("by_script", {}).items():  # Chinese vs English messages
                print(f"  {model} by script: " + ", ".join(f"{s} {v.get('accuracy')} (n={v['n']})" for s, v in split.items()))
    if report.data["stage_errors"]:
        return 3
    return 1 if args.strict and report.failed_count else 0


def cmd_features(args) -> int:
    return cmd_run(args, _features())


def cmd_train(args) -> int:
    return cmd_run(args, ["train"], force=("train",) if args.force else ())


def _locked_workspace(args, config, command: str):
    from pipeline.runner import Workspace

    ws = Workspace(args.workdir, config)
    ws.lock(command)
    return ws


def cmd_predict(args) -> int:
    from pipeline.manifest import load
    from pipeline.report import Report
    from serving.predict import model_config, predict, write_rows

    model_dir = Path(args.model) if args.model else Path(args.workdir) / "models" / "latest"
    if not (model_dir / "config.json").is_file():
        raise PipelineError(f"predict: no trained model at {model_dir} (run 'mmp train' or pass --model)")
    config = model_config(model_dir)
    items = load(manifest_specs(args.manifest), config["data"].root)
    report = Report(" ".join(sys.argv), quiet=args.quiet)
    ws = _locked_workspace(args, config, report.data["command"])
    try:
        rows = predict(ws, items, model_dir.resolve(), report)
        write_rows(rows, Path(args.out))
    finally:
        report.write(ws.workdir)
        ws.close()
    errors = sum(1 for r in rows if r["error"])
    print(f"wrote {len(rows)} predictions to {args.out} ({errors} error rows) with model {model_dir.resolve()}")
    return 1 if args.strict and errors else 0


def cmd_status(args) -> int:
    from pipeline.runner import Workspace
    from pipeline.stage import stage_class
    from pipeline.status import stage_status

    features = _features()
    for name in args.stage or []:
        stage_class(name)  # an unknown name is exit 2 with a hint, not a traceback
    config, items = _load(args)
    with Workspace(args.workdir, config) as ws:
        print(f"{len(items)} items in manifest(s); work directory {ws.workdir}")
        for plan in ws.plan(args.stage or features, items, dry=True):
            print(stage_status(ws.store, plan).line())
    return 0


def cmd_export(args) -> int:
    from pipeline.export import export
    from pipeline.runner import Workspace

    _features()
    config, items = _load(args)
    with Workspace(args.workdir, config) as ws:
        written, missing = export(ws, args.stage, items, Path(args.out))
    print(f"wrote {written} rows to {args.out}" + (f"; {missing} item(s) have no output yet (run 'mmp run {args.stage}')" if missing else ""))
    return 0


def cmd_gc(args) -> int:
    from pipeline.maintenance import gc
    from pipeline.runner import Workspace
    from pipeline.stage import STAGES

    _features()
    config, items = _load(args)
    with Workspace(args.workdir, config) as ws:
        ws.lock("gc")
        ws.memo.touched = set()  # every raw file and model file the plans look up
        live: dict[str, set[str]] = {}
        for plan in ws.plan(list(STAGES), items, dry=True):
            # An item waiting on an upstream output still to compute keeps its last entry: it is
            # reused if that output comes out unchanged.
            latest = ws.store.latest(plan.stage.name) if plan.pending else {}
            live[plan.stage.name] = set(plan.keys.values()) | {latest[i][0] for i in plan.pending if i in latest}
        if args.dry_run:
            for stage in STAGES:
                dead = ws.store.committed(stage).keys() - live.get(stage, set())
                print(f"{stage}: {len(dead)} entries would be removed")
            print(f"raw-file hashes: {len(ws.memo.stale())} would be forgotten")
            return 0
        stats = gc(ws.store, live)
        stats["hashes"] = ws.memo.prune()
    print(f"gc: removed {stats['entries']} entries, {stats['failures']} failure records, rewrote or deleted "
          f"{stats['shards']} shards ({stats['bytes'] / 1e6:.1f} MB), {stats['debris']} leftover files, "
          f"{stats['hashes']} hashes of files no manifest names")
    return 0


def cmd_verify(args) -> int:
    from pipeline.runner import Workspace

    _features()
    config, _ = _load(args)
    with Workspace(args.workdir, config) as ws:
        ws.lock("verify")
        bad = ws.store.verify()
    for msg in bad:
        print(msg)
    print(f"verify: {len(bad)} corrupt shard(s) dropped" if bad else "verify: all shards match their checksums")
    return 0


def cmd_rebuild_index(args) -> int:
    from pipeline.maintenance import rebuild_index
    from pipeline.runner import Workspace

    _features()
    config, _ = _load(args)
    with Workspace(args.workdir, config) as ws:
        ws.lock("rebuild-index")
        stats = rebuild_index(ws.store)
    for message in stats["skipped"]:
        print(f"skipped {message}")
    print(f"rebuild-index: {stats['entries']} entries from {stats['shards']} shards"
          + (f"; {len(stats['skipped'])} shard(s) skipped (their items are recomputed)" if stats["skipped"] else ""))
    return 0


def cmd_demo_data(args) -> int:
    from pipeline.demo import generate

    path = generate(Path(args.out), n_items=args.items, seed=args.seed, force=args.force)
    print(f"demo manifest: {path}")
    return 0


COMMANDS = {
    "features": cmd_features,
    "run": cmd_run,
    "train": cmd_train,
    "predict": cmd_predict,
    "status": cmd_status,
    "export": cmd_export,
    "gc": cmd_gc,
    "verify": cmd_verify,
    "rebuild-index": cmd_rebuild_index,
    "demo-data": cmd_demo_data,
}

if __name__ == "__main__":
    sys.exit(main())
