"""Local paths and URIs (s3://, gs://, file://, memory://, ...) through one small interface.

Plain paths use the os module directly (fast, and what nearly every run does); anything with a scheme
goes through fsspec, which brings the object stores (s3fs, gcsfs) when they are installed.
"""

from __future__ import annotations

import os
import posixpath
from typing import IO


def package_folder(package: str) -> str | None:
    """The folder of an installed Python package (found without importing it), or None."""
    import importlib.util

    found = importlib.util.find_spec(package) if package.isidentifier() else None
    if found is None or not found.submodule_search_locations:
        return None
    return list(found.submodule_search_locations)[0]


def is_uri(path: str) -> bool:
    return "://" in str(path)


def _fs(uri: str):
    import fsspec

    return fsspec.core.url_to_fs(uri)


def join(base: str, relative: str) -> str:
    """relative (a path or a URI) resolved against base (a folder path or URI)."""
    if is_uri(relative) or os.path.isabs(relative):
        return relative
    if is_uri(base):
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, relative))}"
    return os.path.normpath(os.path.join(base, relative))


def inside(path: str, root: str) -> bool:
    """Is path (already normalized) inside root? Both paths, or both URIs of one scheme."""
    if is_uri(path) != is_uri(root):
        return False
    root = root.rstrip("/" if is_uri(root) else os.sep)
    sep = "/" if is_uri(root) else os.sep
    return path == root or path.startswith(root + sep)


def stat(uri: str) -> tuple[int, str]:
    """(size, a version stamp that changes when the object changes) of a URI; FileNotFoundError if absent."""
    fs, path = _fs(uri)
    info = fs.info(path)
    if info.get("type") == "directory":
        raise IsADirectoryError(uri)
    stamp = next((str(info[k]) for k in ("mtime", "LastModified", "updated", "ETag", "etag", "created") if info.get(k)), "")
    return int(info.get("size") or 0), stamp


def open_input(path: str) -> IO[bytes]:
    """A binary file object for a local path or a URI."""
    if is_uri(path):
        fs, p = _fs(path)
        return fs.open(p, "rb")
    return open(path, "rb")


def read_bytes(path: str) -> bytes:
    with open_input(path) as f:
        return f.read()


class Folder:
    """A folder of files (the shard store): a local directory or a URI prefix."""

    def __init__(self, root: str):
        self.root = str(root)
        self.remote = is_uri(self.root)
        if self.remote:
            self.fs, self.base = _fs(self.root)
        else:
            os.makedirs(self.root, exist_ok=True)

    def path(self, name: str) -> str:
        return f"{self.base.rstrip('/')}/{name}" if self.remote else os.path.join(self.root, name)

    def read(self, name: str) -> bytes:
        if self.remote:
            return self.fs.cat_file(self.path(name))
        with open(self.path(name), "rb") as f:
            return f.read()

    def size(self, name: str) -> int:
        """-1 when absent."""
        try:
            return int(self.fs.info(self.path(name))["size"]) if self.remote else os.stat(self.path(name)).st_size
        except FileNotFoundError:
            return -1

    def delete(self, name: str) -> None:
        try:
            if self.remote:
                self.fs.rm_file(self.path(name))
            else:
                os.unlink(self.path(name))
        except FileNotFoundError:
            pass

    def listing(self) -> list[str]:
        """Names (stage/file) of every file one level down."""
        if self.remote:
            base = self.base.rstrip("/")
            try:
                found = self.fs.find(base)
            except FileNotFoundError:
                return []
            return [p[len(base) + 1 :] for p in found if p.count("/") - base.count("/") == 2]
        out = []
        for stage in os.listdir(self.root):
            folder = os.path.join(self.root, stage)
            if os.path.isdir(folder):
                out += [f"{stage}/{f}" for f in os.listdir(folder)]
        return out

    def write_atomic(self, name: str, data: bytes, tmp_suffix: str) -> None:
        """Local: temp file, fsync, rename, fsync the folder. Object stores: one PUT of the final object
        (atomic by itself); names are content checksums, so a rewrite writes identical bytes."""
        if self.remote:
            self.fs.makedirs(posixpath.dirname(self.path(name)), exist_ok=True)
            self.fs.pipe_file(self.path(name), data)
            return
        final = self.path(name)
        folder = os.path.dirname(final)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, "." + os.path.basename(final) + tmp_suffix)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


