"""``mmp search`` and ``mmp index``: the command-line face of serving/search.py.

A query is ``--text/--image/--audio`` (any mix, one query), ``--like ID`` (an indexed item) or
``--query-manifest Q.csv`` (one query per row, the manifest's columns, paths relative to its folder).
The query's words — its text, its voice note's transcript, its screenshot's text — are compared with
every item's typed message, transcript and screen text (serving/search.py). Results print as a table
whose text column shows where the item matched (``said: <transcript>``, ``on screen: <screen text>``,
or its typed message), or with ``--json`` as one object per query per line: ``{"query": ID, "results":
[{"id", "score", "label", "split", "modalities", "matched", "query_words", "words"}, ...]}``.
A query that cannot be used (an undecodable screenshot, an empty voice note, a missing file) is an error
naming its type and cause, exit 2; in a query manifest the other rows are still answered. A voice note
without speech or a screenshot without text is not an error: the query just has no words there.
"""

from __future__ import annotations

import json
import sys

from pipeline.errors import SearchError, absent_kinds

SNIPPET = 60
# serving.search.CHOICES, spelled out: every mmp command builds this parser, and serving.search imports numpy
# (a no-op run must not). tests/test_search_words.py checks the two agree.
CHOICES = ("all", "words", "text", "speech", "screen", "text_ml", "speech_ml", "screen_ml", "image", "audio")


def add_parsers(sub, common) -> None:
    """The ``search`` and ``index`` subcommands (``common`` adds -m/-w/-c/--set/--quiet)."""
    p = sub.add_parser("search", help="find similar items by text, screenshot, voice note or id",
                       description="Find the manifest's items most similar to a query, by cosine over the indexed "
                       "features (the index under WORKDIR/index is brought up to date first). The query goes "
                       "through the pipeline's own cleaning and feature code, in memory; nothing is cached.")
    q = p.add_argument_group("query: any of --text/--image/--audio (one combined query), or --like, or --query-manifest")
    q.add_argument("--text", metavar="Q", help="query text (matches typed messages, what voice notes say and "
                   "what screenshots show)")
    q.add_argument("--image", metavar="FILE", help="query image (a screenshot: its picture, and the text on it "
                   "as words)")
    q.add_argument("--audio", metavar="FILE", help="query audio (a voice note: its sound, and its transcript as words)")
    q.add_argument("--like", metavar="ID", help="an item's own cached features as the query (the item itself is "
                   "left out of its results; other items with identical content are returned)")
    q.add_argument("--query-manifest", metavar="Q.csv", help="one query per row (manifest columns, paths relative "
                   "to its folder); rows that fail are reported, the rest answered (exit 2 if any failed)")
    p.add_argument("--modality", choices=list(CHOICES), default="all",
                   help="what to compare (default all). The words channel: the query's text, its voice note's "
                   "transcript and its screenshot's text are each compared with every item's typed message "
                   "(text), transcript (speech) and screen text (screen), in two model families: the [bert] model "
                   "(spaces text, speech, screen) and the [multilingual] model (text_ml, speech_ml, screen_ml: "
                   "16 languages in one space, so a Chinese query finds an English ticket and back). The words "
                   "channel uses the multilingual family (the bert one only where no multilingual space is "
                   "indexed: all-MiniLM cannot read Chinese); the item's words score is the best cosine over "
                   "those pairs, and the result says where it matched. "
                   "all: (words score if the query has words + image cosine if it has an image + audio cosine "
                   "if it has audio) / the number of those channels the query has, a channel the item lacks "
                   "counting 0. words: the words channel alone. text, speech, screen (bert) and text_ml, speech_ml, "
                   "screen_ml (multilingual): one of the item's text spaces, compared with every word vector of "
                   "the query in that family. image, audio: that space alone")
    p.add_argument("-k", type=int, default=10, metavar="N", help="results per query (default 10; items with content identical "
                   "to the k-th come with it; a k beyond the index returns every item)")
    p.add_argument("--json", action="store_true", help='one line per query: {"query": ID, "results": [{"id", '
                   '"score", "label", "split", "modalities", "matched", "query_words", "words"}]} ("query" is '
                   '"query" for a single query; "matched" is the item\'s text space that gave its words score '
                   '(text, speech or screen; null if none did), "query_words" the query\'s words that matched '
                   'it, "words" the item\'s {"text", "said", "on_screen"}, those it has)')
    common(p)
    p.set_defaults(handler=cmd_search)
    p = sub.add_parser("index", help="bring the search indexes up to date (adds new feature keys, drops unused ones)")
    p.add_argument("--rebuild", action="store_true", help="rebuild every index from the cache (refits statistics)")
    common(p)
    p.set_defaults(handler=cmd_index)


def _load(args):
    """(config, manifest items); the stages (and so their config sections) are registered first."""
    import stages  # noqa: F401
    from pipeline.inputs import load_inputs

    return load_inputs(args.config, args.manifest, args.overrides, getattr(args, "engine", None))


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
    from .search import problem, query_modalities

    config, items = _load(args)
    queries, encoder = _queries(args, config)
    ws, searcher = _open(args, config, items, args.quiet or args.json)
    try:
        if args.like:
            _emit(args, searcher, "query", searcher.like(args.like, args.k, args.modality), like=args.like)
            return 0
        encoded = encoder.encode([item for _, item in queries], modalities=query_modalities(args.modality))
        failed, absent = 0, absent_kinds()
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
            for m, (error, _) in enc.errors.items():  # the query was answered from its other modalities
                if error not in absent and not _same_failure(enc, m):  # no words is not a failure
                    print(f"warning: query {query_id!r} left out {problem(enc, m)}", file=sys.stderr)
            _emit(args, searcher, query_id, results, used=sorted(enc.features), encoded=enc)
        return 2 if failed else 0
    finally:
        ws.close()


# A query's speech and screen words are read from its voice note and screenshot: when the file itself
# failed, the audio / image warning already says so.
_READ_FROM = {"speech": "audio", "screen": "image"}


def _same_failure(encoded, modality: str) -> bool:
    source = _READ_FROM.get(modality)
    return source is not None and encoded.errors.get(source, ("",))[0] == encoded.errors[modality][0]


def snippet(text: str) -> str:
    text = " ".join(text.split())  # newlines (screen text lines) and runs of spaces: one space
    return text if len(text) <= SNIPPET else text[: SNIPPET - 1] + "…"


def where_matched(result: dict, words: dict[str, str]) -> str:
    """The text column: the words the item matched by ("said: …", "on screen: …", or its typed text);
    without a words match, its typed text, else what it said, else what its screen shows."""
    order = {"speech": ("said", "text", "on_screen"), "screen": ("on_screen", "text", "said")}.get(
        result.get("matched"), ("text", "said", "on_screen"))
    for name in order:
        if words.get(name):
            prefix = {"text": "", "said": "said: ", "on_screen": "on screen: "}[name]
            return prefix + snippet(words[name])
    return ""


def _emit(args, searcher, query_id: str, results: list[dict], used=None, like=None, encoded=None) -> None:
    results = [{**r, "words": searcher.words(r["id"])} for r in results]
    if args.json:
        print(json.dumps({"query": query_id, **({"like": like} if like else {}), "results": results}, ensure_ascii=False))
        return
    shown = [m for m in used or [] if not m.endswith("_ml")]  # the multilingual twins of the same inputs
    what = f"like {like}" if like else f"{query_id} ({', '.join(shown)})"
    print(f"{what}: {len(results)} result(s), modality {args.modality}")
    for m, label in (("speech", "said"), ("screen", "on screen")):  # the query's own words, as read
        if encoded is not None and m in encoded.cleaned:
            print(f"  query {label}: {snippet(encoded.cleaned[m].get('text', ''))}")
    print(f"{'rank':>4}  {'score':>6}  {'id':<12} {'label':<14} {'split':<5}  {'per modality':<28} text")
    for rank, r in enumerate(results, start=1):
        parts = " ".join(f"{m} {s:.2f}" for m, s in r["modalities"].items())
        text = where_matched(r, r["words"])
        print(f"{rank:>4}  {r['score']:6.3f}  {r['id']:<12} {r['label']:<14} {r['split']:<5}  {parts:<28} {text}")
