"""The BERT encoder on ONNX Runtime: export once from the configured safetensors weights, cache, run.

``export_onnx(where)`` loads the model folder with transformers (PyTorch, ``attn_implementation="eager"``)
and exports it with the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``, opset ``OPSET``):
inputs ``input_ids`` and ``attention_mask`` (int64, dynamic batch and length), output ``last_hidden_state``
(the tokens' hidden states; pooling stays in ``stages/bert.py``). Only export needs torch, transformers
and ``onnx``; running needs ``onnxruntime`` and ``tokenizers`` alone.

``onnx_graph(where, digest, model_dir, load)`` gives the loaded graph through ``onnx_cache.cached_graph``: the cached
``<model_dir>/bert/<weights digest>-<exporter digest>.onnx`` when it loads, else exported and written there
(a damaged file is rebuilt, and said so), or exported in memory when there is no ``model_dir`` (a Ray actor). ``exporter_digest()`` covers this module's source, torch's version and the
opset, so a new exporter makes a new file (the cache key of ``bert`` holds it too).

``FastTokenizer`` reads ``tokenizer.json`` with ``tokenizers`` directly (no transformers import), with its
stored padding turned off; it gives the same ids as ``AutoTokenizer`` (tested).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.keys import digest_bytes, digest_obj

from .onnx_cache import cached_graph, graph_runner

OPSET = 17
_LOADED: dict[tuple, tuple[Any, Any, Any, str]] = {}


def exporter_digest() -> str:
    """This module's source + torch's version + the opset (torch's version read without importing it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "absent"
    return digest_obj([digest_bytes(Path(__file__).read_bytes()), torch_version, OPSET])


def export_onnx(where: str) -> bytes:
    """The ONNX graph of the encoder in folder ``where`` (needs torch, transformers and onnx)."""
    import io

    import torch
    from transformers import AutoModel

    try:
        import onnx  # noqa: F401 - torch's exporter needs it; say so plainly when it is missing
    except ImportError:
        raise ConfigError("bert.runtime = \"onnxruntime\": exporting the model needs the `onnx` package "
                          "(pip install onnx), or use bert.runtime = \"torch\"") from None
    model = AutoModel.from_pretrained(where, use_safetensors=True, dtype=torch.float32,
                                      attn_implementation="eager").eval()
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    mask[1, 5:] = 0

    class Encoder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    import warnings

    buf = io.BytesIO()
    axes = {0: "batch", 1: "tokens"}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes; the graph is checked by the tests
        torch.onnx.export(Encoder(model), (ids, mask), buf, dynamo=False, opset_version=OPSET,
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes})
    return buf.getvalue()


def onnx_graph(where: str, digest: str, model_dir: Path | None, load):
    """(``load(the graph's bytes)``, where it came from); ``load`` raises on a graph that does not load."""
    path = None if model_dir is None else Path(model_dir) / "bert" / f"{digest[:32]}-{exporter_digest()[:12]}.onnx"
    return cached_graph(path, lambda: export_onnx(where), load, verb="exported")


class FastTokenizer:
    """``tokenizer.json`` through ``tokenizers``: ``self(texts, truncation=True, max_length=n)["input_ids"]``."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        settings = _json(folder / "tokenizer_config.json")
        self.model_max_length = settings.get("model_max_length")
        pad = settings.get("pad_token") or _json(folder / "special_tokens_map.json").get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        self.pad_token_id = self.tokenizer.token_to_id(pad) if isinstance(pad, str) else None

    def __call__(self, texts: list[str], truncation: bool = True, max_length: int | None = None) -> dict[str, Any]:
        if truncation and max_length:
            self.tokenizer.enable_truncation(max_length)
        return {"input_ids": [e.ids for e in self.tokenizer.encode_batch(texts)]}


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


class ModelConfig:
    """config.json's fields as attributes (what token_limit and the stage read), without transformers."""

    def __init__(self, folder: Path):
        data = _json(folder / "config.json")
        if "hidden_size" not in data:
            raise ConfigError(f"bert.model: {folder / 'config.json'} has no hidden_size")
        self.__dict__.update(data)


def pool_numpy(hidden, mask, how: str):
    """``pool`` on numpy arrays (the ONNX Runtime path): (batch, tokens, dim), (batch, tokens) -> (batch, dim)."""
    import numpy as np

    if how == "cls":
        return hidden[:, 0]
    m = mask[:, :, None].astype(hidden.dtype)
    return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), np.float32(1e-9))


def load_onnx(where: str, digest: str, model_dir, threads: int, runtime: str = "onnxruntime",
              precision: str = "fp32") -> tuple[Any, Any, Any, str]:
    """(tokenizer, the graph on ``runtime`` (ONNX Runtime or OpenVINO), model config, where the graph came
    from), once per process."""
    key = (runtime, precision, where, digest, threads)
    if key not in _LOADED:
        folder = Path(where)
        if folder.is_dir() and (folder / "tokenizer.json").is_file():
            tokenizer, config = FastTokenizer(folder), ModelConfig(folder)
        else:
            from transformers import AutoConfig, AutoTokenizer

            tokenizer, config = AutoTokenizer.from_pretrained(where), AutoConfig.from_pretrained(where)
        runner, origin = onnx_graph(where, digest, model_dir, lambda b: graph_runner(b, runtime, threads, precision))
        _LOADED[key] = (tokenizer, runner, config, origin)
    return _LOADED[key]
