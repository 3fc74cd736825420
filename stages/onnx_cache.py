"""ONNX graphs derived once from model weights: a file cache under the work directory, and CPU sessions.

``cached_graph(path, build, load, verb)`` returns ``(load(bytes), where they came from)``: ``path``'s bytes
when ``load`` takes them, else ``build()``'s, written to ``path`` by temp file + fsync + ``os.replace`` (a
damaged file is rebuilt, and the origin says so; a ``ConfigError`` from ``load``, e.g. a runtime that is not
installed, is raised as it is); with ``path = None`` (no work directory, e.g. a Ray actor) it builds in memory.
The graph is loaded once: the session that checks a cached file is the one that runs. ``session(bytes, threads)`` is an ONNX Runtime CPU session with that many intra-op threads;
``graph_runner(bytes, runtime, threads, precision)`` is that session (``onnxruntime``) or the same graph
compiled by OpenVINO for the CPU (``openvino``, ``precision`` ``fp32`` or ``bf16``), behind one ``run``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pipeline.errors import ConfigError

T = TypeVar("T")


def cached_graph(path: Path | None, build: Callable[[], bytes], load: Callable[[bytes], T],
                 verb: str = "built") -> tuple[T, str]:
    if path is None:
        return load(build()), f"{verb} in memory"
    damaged = ""
    if path.is_file():
        data = path.read_bytes()
        try:
            return load(data), f"cached {path}"
        except ConfigError:
            raise
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
    return load(data), f"{verb}{damaged}, cached {path}"


def session(data: bytes, threads: int):
    """An ONNX Runtime CPU session over ``data`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")


class OpenVinoGraph:
    """An ONNX graph compiled by OpenVINO for the CPU, called like an ONNX Runtime session (``run``)."""

    def __init__(self, data: bytes, threads: int, precision: str):
        try:
            import openvino as ov
        except ImportError:
            raise ConfigError("runtime = \"openvino\" needs the openvino package (pip install 'mmpipe[openvino]'), "
                              "or use runtime = \"onnxruntime\"") from None
        core = ov.Core()
        # Explicit even for fp32: on CPUs with native bf16 OpenVINO would otherwise pick bf16 by itself.
        self.compiled = core.compile_model(core.read_model(data, b""), "CPU", {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)
        self.lock = threading.Lock()  # one infer request: calls from several threads take turns

    def run(self, _names, feeds: dict) -> list:
        with self.lock:
            return [self.request.infer(feeds)[self.output]]  # a copy (share_outputs=False)


def graph_runner(data: bytes, runtime: str, threads: int, precision: str = "fp32"):
    """The graph on ``runtime`` (``onnxruntime``: fp32 only; ``openvino``: fp32 or bf16) with ``threads`` threads."""
    if runtime == "openvino":
        return OpenVinoGraph(data, threads, precision)
    if precision != "fp32":
        raise ConfigError(f"precision {precision!r} needs runtime = \"openvino\" (ONNX Runtime runs these graphs in fp32)")
    return session(data, threads)
