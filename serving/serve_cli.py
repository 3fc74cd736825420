"""``mmp serve``: the command-line face of serving/app.py (the CLI wires it in, as it does search).

Importing this module registers the ``[serve]`` config section (serving.settings), so every CLI command
knows it. The service's knobs come from ``-c/--set`` (``[serve]``); features follow the model folder's
own ``config.json``.
"""

from __future__ import annotations

from pathlib import Path

from . import settings  # noqa: F401  (registers [serve])


def add_parsers(sub, common) -> None:
    """The ``serve`` subcommand (``common`` adds -m/-w/-c/--set/--quiet)."""
    p = sub.add_parser("serve", help="HTTP service + web page: predicted label and similar past tickets for a new ticket",
                       description="Serve a trained model over HTTP (FastAPI + uvicorn): POST /v1/predict and "
                       "/v1/search take a ticket's text, screenshot and voice note; the page at / does the same "
                       "in a browser; API docs at /docs. Binds 127.0.0.1 unless told otherwise.")
    p.add_argument("--model", default=None, help="model folder (default: WORKDIR/models/latest)")
    p.add_argument("--host", default=None, help="address to bind (default: serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: serve.port, 8000)")
    p.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' on every endpoint but "
                   "/healthz (default: $MMP_TOKEN; none)")
    common(p)
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args) -> int:
    from pipeline.config import Config
    from pipeline.inputs import config_path, manifest_specs

    from .app import run_server

    model_dir = Path(args.model) if args.model else Path(args.workdir) / "models" / "latest"
    serve = Config.load(config_path(args.config), args.overrides)["serve"]
    return run_server(model_dir, manifest_specs(args.manifest), Path(args.workdir), serve, host=args.host,
                      port=args.port, token=args.token, quiet=args.quiet)
