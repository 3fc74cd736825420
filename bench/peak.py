"""This machine's fp32 matmul peak, and the work in a model: the yardsticks for the model stages' FLOP rates.

``sgemm_rates(n)`` times an n×n×n fp32 matmul (2n³ FLOPs) with every runtime present — numpy (its BLAS),
torch, ONNX Runtime (a one-MatMul graph), TensorFlow and OpenVINO — at this process's thread count, and
returns GFLOP/s per runtime; the best is the peak a stage's achieved rate is compared against (the rate
of one runtime alone understates what the CPU does: MKL, OpenBLAS and MLAS differ several-fold by CPU).

``conv_flops(onnx_bytes, height, width)`` counts the multiply-adds of a vision graph's Conv and MatMul/Gemm
nodes for one image of that size (from ONNX shape inference), times two.
"""

from __future__ import annotations

import numpy as np

from stages.cpu import cpu_threads


def _best(fn) -> float:
    from bench.run import best_of

    fn()  # warm up
    return best_of(fn, 5)


def _matmul_graph(n: int) -> bytes:
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "a"], ["y"])], "sgemm", [a], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def sgemm_rates(n: int = 2048) -> dict[str, float]:
    threads = cpu_threads(0)
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    flops = 2 * n**3
    rates: dict[str, float] = {"numpy": flops / _best(lambda: a @ a)}
    try:
        import torch

        torch.set_num_threads(threads)
        t = torch.from_numpy(a)
        rates["torch"] = flops / _best(lambda: torch.mm(t, t))
    except ImportError:
        pass
    from stages.onnx_cache import graph_runner

    graph = _matmul_graph(n)
    for runtime in ("onnxruntime", "openvino"):
        try:
            run = graph_runner(graph, runtime, threads)
        except Exception:  # noqa: BLE001 - a runtime that is not installed is simply not measured
            continue
        rates[runtime] = flops / _best(lambda run=run: run.run(None, {"a": a}))
    try:
        import tensorflow as tf

        ta = tf.constant(a)
        rates["tensorflow"] = flops / _best(lambda: tf.linalg.matmul(ta, ta).numpy())
    except ImportError:
        pass
    return {k: v / 1e9 for k, v in rates.items()}


def conv_flops(data: bytes, height: int, width: int) -> float:
    """FLOPs (2 × multiply-adds) of the Conv, MatMul and Gemm nodes for one (1, height, width, 3) image."""
    import onnx
    from onnx import shape_inference

    model = onnx.load_from_string(data)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, height, width, 3)):
        dim.ClearField("dim_param")
        dim.dim_value = value
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    shapes.update({v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.output})
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            out = shapes[node.output[0]]  # (1, C_out, H, W)
            w = weights[node.input[1]]  # (C_out, C_in / groups, kH, kW)
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("MatMul", "Gemm") and node.input[1] in weights:
            w = weights[node.input[1]]  # (K, N), or (N, K) for a Gemm with transB = 1
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            macs += int(np.prod(shapes[node.output[0]])) * w[1 if trans_b else 0]
    return 2.0 * macs
