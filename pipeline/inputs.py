"""What a command reads before any work: the config and the manifests, with the command line's defaults.

``load_inputs(config_path, manifests, overrides, engine)`` -> (``Config``, items). ``config_path`` None
means ``pipeline.toml`` in the current folder if there is one, else the defaults in code; ``manifests``
empty means ``manifests/demo.csv``. Stage sections must be registered first (the caller imports
``stages``): the core never does. Shared by every command of the wiring layer (``mmpipe_cli``) and by the
subcommands serving adds to it (search, index, serve), so none of them imports another's CLI module.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MANIFEST = "manifests/demo.csv"
DEFAULT_CONFIG = "pipeline.toml"


def config_path(given: str | None) -> str | None:
    """The config file a command uses: the one given, else pipeline.toml here if present, else none."""
    return given or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)


def manifest_specs(given: list[str] | None) -> list[str]:
    return list(given or [DEFAULT_MANIFEST])


def load_inputs(config: str | None, manifests: list[str] | None, overrides: list[str], engine: str | None = None):
    """(Config, manifest items); ``engine`` overrides run.engine."""
    from .config import Config
    from .manifest import load

    extra = [f'run.engine="{engine}"'] if engine else []
    loaded = Config.load(config_path(config), list(overrides) + extra)
    return loaded, load(manifest_specs(manifests), loaded["data"].root)
