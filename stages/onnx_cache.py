"""ONNX graphs derived once from model weights: a file cache under the work directory, and CPU sessions.

``cached_graph(path, build, check, verb)`` returns ``(bytes, where they came from)``: ``path``'s bytes when
``check`` loads them, else ``build()``'s, written to ``path`` by temp file + fsync + ``os.replace`` (a damaged
file is rebuilt, and the origin says so); with ``path = None`` (no work directory, e.g. a Ray actor) it builds
in memory. ``session(bytes, threads)`` is an ONNX Runtime CPU session with that many intra-op threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def cached_graph(path: Path | None, build: Callable[[], bytes], check: Callable[[bytes], object],
                 verb: str = "built") -> tuple[bytes, str]:
    if path is None:
        return build(), f"{verb} in memory"
    damaged = ""
    if path.is_file():
        data = path.read_bytes()
        try:
            check(data)
            return data, f"cached {path}"
        except Exception as exc:  # noqa: BLE001 - a damaged cache file is rebuilt from the weights, and said so
            damaged = f" (the cached file was unreadable: {type(exc).__name__})"
    data = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}{path.suffix}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return data, f"{verb}{damaged}, cached {path}"


def session(data: bytes, threads: int):
    """An ONNX Runtime CPU session over ``data`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
