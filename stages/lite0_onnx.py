"""EfficientNet-Lite0 as an ONNX graph written directly from a checked PyTorch state dict, and its cache.

``build_onnx(state)`` writes the same network as ``efficientnet_lite.build_lite0`` (the same ``block_plan()``,
TF "same" padding = ONNX ``auto_pad = SAME_UPPER``, BN epsilon 1e-3, ReLU6 = ``Clip(0, 6)``) with
``onnx.helper``: input ``image`` ``(n, H, W, 3)`` float32 already preprocessed as ``(x - 127) / 128``
(NHWC, as the Keras model takes it; transposed inside the graph), output ``features`` ``(n, 1280)``. The
state dict is checked first against the Keras architecture (``efficientnet_lite.check_state_dict``), so
a file that does not fit is refused by name before anything is written. No converter package, no tracing.

``lite0_onnx(pth, digest, model_dir, load)`` gives the loaded graph through ``onnx_cache.cached_graph``:
the cached ``<model_dir>/backbones/<.pth digest>-<this module's digest>.onnx`` when ``load`` takes it, else
built and written there (a damaged file is rebuilt, and said so), or built in memory when there is no
``model_dir`` (a Ray actor). Building reads the ``.pth`` with torch (``weights_only=True``);
running the cached graph needs only onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.keys import digest_bytes

from .efficientnet_lite import BN_EPSILON, BN_TENSORS, FEATURES, block_plan
from .onnx_cache import cached_graph

OPSET = 17


def graph_digest() -> str:
    return digest_bytes(Path(__file__).read_bytes())


def build_onnx(state: dict) -> bytes:
    """The serialized Lite0 feature graph with the (checked) tensors of ``state``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    clip_lo, clip_hi = const("relu6.min", np.array(0.0)), const("relu6.max", np.array(6.0))

    def conv_bn(x, conv, bn, stride, groups=1, relu=True):
        w = state[f"{conv}.weight"]
        nodes.append(helper.make_node("Conv", [x, const(f"{conv}.weight", w)], [f"{conv}.out"], auto_pad="SAME_UPPER",
                                      strides=[stride, stride], group=groups, kernel_shape=list(w.shape[2:])))
        nodes.append(helper.make_node("BatchNormalization", [f"{conv}.out"] + [const(f"{bn}.{t}", state[f"{bn}.{t}"])
                                      for t in BN_TENSORS], [f"{bn}.out"], epsilon=BN_EPSILON))
        if not relu:
            return f"{bn}.out"
        nodes.append(helper.make_node("Clip", [f"{bn}.out", clip_lo, clip_hi], [f"{bn}.relu6"]))
        return f"{bn}.relu6"

    nodes.append(helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]))
    x = conv_bn("nchw", "_conv_stem", "_bn0", 2)
    for p, block_in, block_stride, expand, _kernel, _filters_out, skip in block_plan():
        h = x
        if expand != 1:
            h = conv_bn(h, p + "_expand_conv", p + "_bn0", 1)
        h = conv_bn(h, p + "_depthwise_conv", p + "_bn1", block_stride, groups=block_in * expand)
        h = conv_bn(h, p + "_project_conv", p + "_bn2", 1, relu=False)
        if skip:
            nodes.append(helper.make_node("Add", [x, h], [p + "skip"]))
            h = p + "skip"
        x = h
    x = conv_bn(x, "_conv_head", "_bn1", 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    graph = helper.make_graph(
        nodes, "efficientnet_lite0",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", "height", "width", 3])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", FEATURES])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mmpipe")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def state_for_onnx(pth: Path) -> dict:
    """The .pth's tensors, checked against the Lite0 architecture (ConfigError naming what does not fit)."""
    from .efficientnet_lite import build_lite0, check_state_dict, read_state_dict

    state = read_state_dict(pth)
    check_state_dict(build_lite0(), state, pth)
    return state


def lite0_onnx(pth: Path, digest: str, model_dir: Path | None, load):
    """(``load(the graph's bytes)``, where it came from); ``load`` raises on a graph that does not load."""
    path = None if model_dir is None else Path(model_dir) / "backbones" / f"{digest}-{graph_digest()[:12]}.onnx"
    return cached_graph(path, lambda: build_onnx(state_for_onnx(pth)), load)
