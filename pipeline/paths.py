"""Raw paths named in a manifest -> (absolute path or URI, size, version stamp), confined to the data root.

Confinement is lexical (``..`` and absolute paths must stay under the root) and, for local files, real:
each directory is resolved once (``realpath``, memoized per resolver), and an item's own file is
followed only when ``lstat`` says it is a symlink, so a symlink leaving the root is refused while a
plain file costs one ``lstat``. URIs are stat'ed through fsspec.
"""

from __future__ import annotations

import os
import stat as stat_mode

from . import fs
from .errors import InputTooLarge, MissingFile, PathEscapesRoot


class PathResolver:
    """Resolves many paths; remembers each directory's real path (one resolver per plan)."""

    def __init__(self, allow_outside: bool, max_bytes: int):
        self.allow_outside, self.max_bytes = allow_outside, max_bytes
        self._real_dirs: dict[str, str] = {}

    def _real_dir(self, directory: str) -> str:
        real = self._real_dirs.get(directory)
        if real is None:
            real = self._real_dirs[directory] = os.path.realpath(directory)
        return real

    def resolve(self, base: str, root: str, raw: str) -> tuple[str, int, str | int]:
        target = fs.join(base, raw)
        if not self.allow_outside and not fs.inside(target, root):
            raise PathEscapesRoot(f"path {raw!r} points outside the data root {root}")
        if fs.is_uri(target):
            try:
                size, stamp = fs.stat(target)
            except (FileNotFoundError, IsADirectoryError):
                raise MissingFile(f"file not found: {raw!r} (looked at {target})") from None
        else:
            target, size, stamp = self._local(target, root, raw)
        if size > self.max_bytes:
            raise InputTooLarge(f"{raw!r} is {size / 1e6:.1f} MB, over the {self.max_bytes / 1e6:.0f} MB cap (data.max_file_mb)")
        return target, size, stamp

    def _local(self, target: str, root: str, raw: str) -> tuple[str, int, int]:
        directory, name = os.path.split(target)
        real = os.path.join(self._real_dir(directory), name)
        try:
            st = os.lstat(real)
            if stat_mode.S_ISLNK(st.st_mode):
                real = os.path.realpath(real)
                st = os.stat(real)
        except (FileNotFoundError, NotADirectoryError):
            raise MissingFile(f"file not found: {raw!r} (looked at {target})") from None
        except OSError as exc:  # e.g. a name too long for the file system, a loop of links
            raise MissingFile(f"cannot stat {raw[:200]!r}: {exc.strerror or exc}") from None
        if not self.allow_outside and not fs.inside(real, self._real_dir(root)):
            raise PathEscapesRoot(f"{raw!r} is a link to {real}, outside the data root {root}")
        if not stat_mode.S_ISREG(st.st_mode):
            raise MissingFile(f"{raw!r} is not a regular file")
        return real, st.st_size, st.st_mtime_ns


def resolve_path(item, raw: str, allow_outside: bool, max_bytes: int) -> tuple[str, int, str | int]:
    """One path of one manifest item (see ``PathResolver``)."""
    return PathResolver(allow_outside, max_bytes).resolve(item.base, item.root, raw)
