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
    """Resolves many paths; each directory is joined, normalised, confined and resolved once."""

    def __init__(self, allow_outside: bool, max_bytes: int):
        self.allow_outside, self.max_bytes = allow_outside, max_bytes
        self._real: dict[str, str] = {}
        # (base, root, directory as written) -> (joined path, lexically inside root, real path, really inside, root)
        self._dirs: dict[tuple[str, str, str], tuple[str, bool, str, bool, str]] = {}

    def _realpath(self, path: str) -> str:
        real = self._real.get(path)
        if real is None:
            real = self._real[path] = os.path.realpath(path)
        return real

    def _directory(self, base: str, root: str, directory: str) -> tuple[str, bool, str, bool, str]:
        key = (base, root, directory)
        entry = self._dirs.get(key)
        if entry is None:
            joined = os.path.normpath(os.path.join(base, directory)) if directory else base
            real = self._realpath(joined)
            entry = self._dirs[key] = (joined, self.allow_outside or fs.inside(joined, root), real,
                                       self.allow_outside or fs.inside(real, self._realpath(root)), root)
        return entry

    def resolve(self, base: str, root: str, raw: str) -> tuple[str, int, str | int]:
        directory, _, name = raw.rpartition("/")
        where = self._dirs.get((base, root, directory))
        if where is not None and name not in ("", ".", ".."):  # the common case, kept short: a file in a known folder
            if not where[1]:
                raise PathEscapesRoot(f"path {raw!r} points outside the data root {root}")
            path = where[2] + os.sep + name
            try:
                st = os.lstat(path)
            except OSError:
                st = None
            if st is not None and where[3] and stat_mode.S_ISREG(st.st_mode) and st.st_size <= self.max_bytes:
                return path, st.st_size, st.st_mtime_ns
        return self._resolve(base, root, raw, directory, name)

    def _resolve(self, base: str, root: str, raw: str, directory: str, name: str) -> tuple[str, int, str | int]:
        if name in ("", ".", "..") or raw.startswith("/") or fs.is_uri(raw) or fs.is_uri(base):
            target = fs.join(base, raw)  # the general case: URIs, absolute paths, names that are not files
            target = target if fs.is_uri(target) else os.path.normpath(target)
            if not self.allow_outside and not fs.inside(target, root):
                raise PathEscapesRoot(f"path {raw!r} points outside the data root {root}")
            if fs.is_uri(target):
                target, size, stamp = self._uri(target, raw)
            else:
                directory, name = os.path.split(target)
                target, size, stamp = self._local(self._directory(directory, root, ""), name, raw)
        else:
            where = self._directory(base, root, directory)
            if not where[1]:
                raise PathEscapesRoot(f"path {raw!r} points outside the data root {root}")
            target, size, stamp = self._local(where, name, raw)
        if size > self.max_bytes:
            raise InputTooLarge(f"{raw!r} is {size / 1e6:.1f} MB, over the {self.max_bytes / 1e6:.0f} MB cap (data.max_file_mb)")
        return target, size, stamp

    @staticmethod
    def _uri(target: str, raw: str) -> tuple[str, int, str]:
        try:
            size, stamp = fs.stat(target)
        except (FileNotFoundError, IsADirectoryError):
            raise MissingFile(f"file not found: {raw!r} (looked at {target})") from None
        return target, size, stamp

    def _local(self, where: tuple[str, bool, str, bool, str], name: str, raw: str) -> tuple[str, int, int]:
        """One lstat; the file itself is followed only when it is a symlink."""
        joined, _, real_dir, real_inside, root = where
        real = real_dir + os.sep + name if real_dir != os.sep else os.sep + name
        try:
            st = os.lstat(real)
            linked = stat_mode.S_ISLNK(st.st_mode)
            if linked:
                real = os.path.realpath(real)
                st = os.stat(real)
        except (FileNotFoundError, NotADirectoryError):
            raise MissingFile(f"file not found: {raw!r} (looked at {os.path.join(joined, name)})") from None
        except OSError as exc:  # e.g. a name too long for the file system, a loop of links
            raise MissingFile(f"cannot stat {raw[:200]!r}: {exc.strerror or exc}") from None
        if not self.allow_outside and not (fs.inside(real, self._realpath(root)) if linked else real_inside):
            raise PathEscapesRoot(f"{raw!r} is a link to {real}, outside the data root {root}")
        if not stat_mode.S_ISREG(st.st_mode):
            raise MissingFile(f"{raw!r} is not a regular file")
        return real, st.st_size, st.st_mtime_ns


def resolve_path(item, raw: str, allow_outside: bool, max_bytes: int) -> tuple[str, int, str | int]:
    """One path of one manifest item (see ``PathResolver``)."""
    return PathResolver(allow_outside, max_bytes).resolve(item.base, item.root, raw)
