"""mfcc: cleaned audio -> a fixed-length vector (mean and std of MFCCs over frames).

Clips of equal length (all of them, when clean_audio pads to a fixed duration) go through one
batched ``librosa.feature.mfcc`` call on a (batch, samples) array.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.config import execution_only
from pipeline.outputs import Field
from pipeline.stage import Stage, register

if TYPE_CHECKING:
    import numpy as np


@dataclass
class MfccConfig:
    n_mfcc: int = 40
    n_fft: int = 512
    hop_length: int = 160
    n_mels: int = 64
    fmin: float = 0.0
    # Append first and second order deltas before pooling.
    deltas: bool = False
    batch_size: int = execution_only(64)

    def validate(self) -> str | None:
        if not 1 <= self.n_mfcc <= self.n_mels:
            return f"n_mfcc must be within 1..n_mels ({self.n_mels}), not {self.n_mfcc}"
        if self.hop_length < 1 or self.n_fft < 16:
            return "hop_length must be >= 1 and n_fft >= 16"
        return None


def mfcc_vectors(audio: np.ndarray, sr: int, cfg: MfccConfig) -> np.ndarray:
    """(batch, samples) float32 -> (batch, dims) float32 pooled MFCC vectors.

    The STFT runs on the whole batch in one call; the mel projection and the dB conversion are per clip,
    because ``librosa.feature.mfcc`` on a batch clips every clip at 80 dB below the loudest clip of the
    batch (and sums in a batch-dependent order), which would make an item's features depend on its
    batch mates.
    """
    import numpy as np
    import librosa
    import scipy.fft

    spectrum = np.abs(librosa.stft(audio, n_fft=cfg.n_fft, hop_length=cfg.hop_length)) ** 2  # FFT: per row
    basis = librosa.filters.mel(sr=sr, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin)
    mel = [basis @ clip for clip in spectrum]  # one fixed-shape product per clip: batch-independent bits
    db = np.stack([librosa.power_to_db(clip) for clip in mel])
    m = scipy.fft.dct(db, axis=-2, type=2, norm="ortho")[..., : cfg.n_mfcc, :]
    if cfg.deltas:
        width = min(9, m.shape[-1] - (1 - m.shape[-1] % 2))
        if width >= 3:
            m = np.concatenate([m, librosa.feature.delta(m, width=width), librosa.feature.delta(m, order=2, width=width)], axis=-2)
        else:
            m = np.concatenate([m, np.zeros_like(m), np.zeros_like(m)], axis=-2)
    return np.concatenate([m.mean(axis=-1), m.std(axis=-1)], axis=-1).astype(np.float32)


@register
class Mfcc(Stage):
    name = "mfcc"
    version = "1"
    inputs = ("clean_audio",)
    Config = MfccConfig

    def output_spec(self) -> dict[str, Field]:
        per_frame = self.config.n_mfcc * (3 if self.config.deltas else 1)
        return {"mfcc": Field("float32", (2 * per_frame,))}

    def setup(self) -> None:
        import numpy as np

        # Import and warm up librosa once (its first call builds filters and caches), before timing batches.
        mfcc_vectors(np.zeros((1, 4096), np.float32), 16000, self.config)

    def process(self, batch: list[dict]) -> list[dict]:
        import numpy as np
        from threadpoolctl import threadpool_limits

        out: list = [None] * len(batch)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, rec in enumerate(batch):
            groups.setdefault((int(rec["sample_rate"]), rec["audio"].shape[-1]), []).append(i)
        for (sr, _), idx in groups.items():
            audio = np.stack([batch[i]["audio"] for i in idx])
            # numpy's FFT is single-threaded: one batched call per core, on threads (it releases the GIL).
            # BLAS runs single-threaded meanwhile (set here, once, not per thread: the setting is
            # process-wide), so the bits never depend on thread count or engine (Ray workers use one).
            parts = np.array_split(audio, min(len(idx), os.cpu_count() or 1))
            with threadpool_limits(limits=1, user_api="blas"):
                vectors = np.concatenate(list(self._pool().map(lambda a: mfcc_vectors(a, sr, self.config), parts)))
            for i, v in zip(idx, vectors):
                out[i] = {"mfcc": v}
        return out

    def _pool(self):
        if getattr(self, "_threads", None) is None:
            from concurrent.futures import ThreadPoolExecutor

            self._threads = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="mfcc")
        return self._threads
