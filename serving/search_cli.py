"""``mmp search`` and ``mmp index``: the command-line face of serving/search.py.

A query is ``--text/--image/--audio`` (any mix, one query), ``--like ID`` (an indexed item) or
``--query-manifest Q.csv`` (one query per row, the manifest's columns, paths relative to its folder).
Results print as a table with a snippet of each hit's cleaned text, or with ``--json`` as one object per
query per line: ``{"query": ID, "results": [{"id", "score", "label", "split", "modalities"}, ...]}``.
A query that cannot be used (an undecodable screenshot, an empty voice note, a missing file) is an error
naming its type and cause, exit 2; in a query manifest the other rows are still answered.
"""

from __future__ import annotations

import json
import sys

from pipeline.errors import SearchError

SNIPPET = 60


def add_parsers(sub, common) -> None:
    """The ``search`` and ``index`` subcommands (``common`` adds -m/-w/-c/--set/--quiet)."""
    p = sub.add_parser("search", help="find similar items by text, screenshot, voice note or id",
                       description="Find the manifest's items most similar to a query, by cosine over the indexed "
                       "features (the index under WORKDIR/index is brought up to date first). The query goes "
                       "through the pipeline's own cleaning and feature code, in memory; nothing is cached.")
    q = p.add_argument_group("query: any of --text/--image/--audio (one combined query), or --like, or --query-manifest")
    q.add_argument("--text", metavar="Q", help="query text")
    q.add_argument("--image", metavar="FILE", help="query image (a screenshot)")
    q.add_argument("--audio", metavar="FILE", help="query audio (a voice note)")
    q.add_argument("--like", metavar="ID", help="an item's own cached features as the query (the item itself is "
                   "left out of its results; other items with identical content are returned)")
    q.add_argument("--query-manifest", metavar="Q.csv", help="one query per row (manifest columns, paths relative "
                   "to its folder); rows that fail are reported, the rest answered (exit 2 if any failed)")
    p.add_argument("--modality", choices=["all", "text", "image", "audio"], default="all",
                   help="space to search (default all: an item's score is the mean cosine over the modalities "
                   "present in both the query and the item, times the share of the query's modalities the item "
                   "has; a modality the item lacks counts 0)")
    p.add_argument("-k", type=int, default=10, metavar="N", help="results per query (default 10; items with content identical "
                   "to the k-th come with it; a k beyond the index returns every item)")
    p.add_argument("--json", action="store_true", help='one line per query: {"query": ID, "results": [{"id", '
                   '"score", "label", "split", "modalities"}]} ("query" is "query" for a single query)')
    common(p)
    p.set_defaults(handler=cmd_search)
    p = sub.add_parser("index", help="bring the search indexes up to date (adds new feature keys, drops unused ones)")
    p.add_argument("--rebuild", action="store_true", help="rebuild every index from the cache (refits statistics)")
    common(p)
    p.set_defaults(handler=cmd_index)


def _load(args):
    """(config, manifest items); the stages (and so their config sections) are registered first."""
    import stages  # noqa: F401
    from pipeline.cli import _load as load_config_and_items

    return load_config_and_items(args)


def _open(args, config, items, quiet: bool):
    from pipeline.runner import Workspace

    from .search import Searcher

    ws = Workspace(args.workdir, config)
    try:
        return ws, Searcher(ws, items, progress=not quiet)
    except BaseException:
        ws.close()
        raise


def _update_line(searcher) -> str:
    parts = []
    for m, s in searcher.update_stats.items():
        size = searcher._spaces[m].size if m in searcher._spaces else 0
        change = "rebuilt" if s["rebuilt"] else f"+{s['added']} -{s['removed']}"
        parts.append(f"{m} {size} vectors ({change})")
    return "index: " + ", ".join(parts)


def cmd_index(args) -> int:
    from .index import IndexFolder

    config, items = _load(args)
    if args.rebuild:
        from pathlib import Path

        with IndexFolder(Path(args.workdir) / "index") as folder:
            folder.drop()
    ws, searcher = _open(args, config, items, args.quiet)
    ws.close()
    print(_update_line(searcher))
    for m, s in searcher.update_stats.items():
        if s.get("reason") and not args.rebuild:
            print(f"  {m}: rebuilt because {s['reason']}")
    return 0


def _queries(args, config):
    """[(query id, Item)] and the encoder for them."""
    from pipeline.manifest import load

    from .query import QueryEncoder, query_item

    direct = args.text is not None or args.image or args.audio
    chosen = sum(bool(x) for x in (direct, args.like, args.query_manifest))
    if chosen != 1:
        raise SearchError("give one query: --text/--image/--audio (combinable), --like ID, or --query-manifest Q.csv")
    if args.query_manifest:
        return [(item.id, item) for item in load([args.query_manifest], config["data"].root)], QueryEncoder(config)
    if direct:  # files named on the command line are the user's explicit choice: no data-root confinement
        item = query_item("query", text=args.text or "", image=args.image or "", audio=args.audio or "")
        return [("query", item)], QueryEncoder(config, allow_outside_root=True)
    return [], None


def cmd_search(args) -> int:
    from .search import problem

    config, items = _load(args)
    queries, encoder = _queries(args, config)
    ws, searcher = _open(args, config, items, args.quiet or args.json)
    try:
        if args.like:
            _emit(args, searcher, "query", searcher.like(args.like, args.k, args.modality), like=args.like)
            return 0
        wanted = None if args.modality == "all" else [args.modality]
        encoded = encoder.encode([item for _, item in queries], modalities=wanted)
        failed = 0
        for (query_id, _), enc in zip(queries, encoded):
            try:
                results = searcher.search(enc, args.k, args.modality)
            except SearchError as exc:
                if not args.query_manifest:
                    raise
                failed += 1
                print(f"error: {exc}", file=sys.stderr)
                if args.json:
                    print(json.dumps({"query": query_id, "error": "SearchError", "message": str(exc), "results": []}))
                continue
            for m in enc.errors:  # the query was answered from its other modalities
                print(f"warning: query {query_id!r} left out {problem(enc, m)}", file=sys.stderr)
            _emit(args, searcher, query_id, results, used=sorted(enc.features))
        return 2 if failed else 0
    finally:
        ws.close()


def _emit(args, searcher, query_id: str, results: list[dict], used=None, like=None) -> None:
    if args.json:
        print(json.dumps({"query": query_id, **({"like": like} if like else {}), "results": results}, ensure_ascii=False))
        return
    what = f"like {like}" if like else f"{query_id} ({', '.join(used or [])})"
    print(f"{what}: {len(results)} result(s), modality {args.modality}")
    print(f"{'rank':>4}  {'score':>6}  {'id':<12} {'label':<14} {'split':<5}  {'per modality':<28} text")
    for rank, r in enumerate(results, start=1):
        parts = " ".join(f"{m} {s:.2f}" for m, s in r["modalities"].items())
        text = (searcher.cleaned_text(r["id"]) or "").replace("\n", " ")
        text = text if len(text) <= SNIPPET else text[: SNIPPET - 1] + "…"
        print(f"{rank:>4}  {r['score']:6.3f}  {r['id']:<12} {r['label']:<14} {r['split']:<5}  {parts:<28} {text}")
