"""make bench, the model stages (called from bench/run.py; ``python -m bench.models`` runs them alone).

For ``bert`` (all-MiniLM-L6-v2 on mixed-length support texts) and ``cnn`` (EfficientNet-Lite0 on cleaned
224×224 images), every runtime present is timed on the same inputs in alternating rounds in this one
process (best round each), as the stage runs it (``Bert.embed`` incl. tokenizing; ``Cnn.process`` incl.
preprocessing): the default (ONNX Runtime fp32), the previous default (torch / TensorFlow), OpenVINO fp32
and — where the CPU has native bfloat16 — ``precision = "bf16"``. Figures:

- default / previous stage and bf16 / previous stage (goals 1.6× bert, 1.4× cnn, 3× bf16), with the
  fidelity of each variant against the default beside it: max abs difference, minimum cosine, and the
  share of items whose nearest neighbour (bert) or ImageNet class (cnn, real photos) is unchanged;
- stage / raw runtime forward on the very same batches (overhead; goal 0.8×);
- the stage's achieved GFLOP/s (real tokens × 2 × non-embedding parameters; the graph's conv MACs × 2)
  against the best fp32 sgemm among the runtimes present (``bench/peak.py``), reported without a goal.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError
from stages.cpu import cpu_has_bf16


def _rounds(variants: dict, run, rounds: int = 3) -> dict[str, float]:
    """Best wall time of ``run(stage)`` per variant, the variants taking turns round by round."""
    best = {name: float("inf") for name in variants}
    for _ in range(rounds):
        for name, stage in variants.items():
            t = time.perf_counter()
            run(stage)
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fidelity(got: np.ndarray, want: np.ndarray, same: np.ndarray | None = None) -> dict:
    """How close ``got`` is to ``want``: max abs, min cosine, and agreement (``same``: per-item booleans;
    by default, whether each item's nearest other item is unchanged)."""
    if same is None:
        sim, sim2 = _unit(want) @ _unit(want).T, _unit(got) @ _unit(got).T
        np.fill_diagonal(sim, -2)
        np.fill_diagonal(sim2, -2)
        same = sim.argmax(1) == sim2.argmax(1)
    return {"max_abs": float(np.abs(got - want).max()),
            "min_cosine": float((_unit(got) * _unit(want)).sum(1).min()),
            "agreement": float(np.mean(same))}


def _fidelity_text(f: dict, what: str) -> str:
    return f"max abs {f['max_abs']:.1e}, cosine >= {f['min_cosine']:.5f}, {what} {f['agreement']:.2f}"


def _variants(make, options: list[tuple[str, dict]]) -> tuple[dict, dict]:
    """name -> a ready stage for each option that this machine can run; name -> why not, for the rest."""
    ready, skipped = {}, {}
    for name, settings in options:
        if settings.get("precision") == "bf16" and not cpu_has_bf16():
            skipped[name] = "no native bfloat16 on this CPU"
            continue
        try:
            stage = make(**settings)
            stage.ensure_ready()
            ready[name] = stage
        except ConfigError as exc:
            skipped[name] = str(exc)
    return ready, skipped


def bench_bert(tmp: Path, record, peak: float, scale: float = 1.0) -> dict:
    from bench.run import mixed_texts
    from stages.bert import Bert, BertConfig

    texts = mixed_texts(int(384 * scale))

    def make(**settings):
        stage = Bert(BertConfig(batch_size=len(texts), model_batch_size=32, **settings))
        stage.model_dir = tmp / "models"
        return stage

    variants, skipped = _variants(make, [
        ("onnxruntime", {}), ("torch", {"runtime": "torch", "device": "cpu"}), ("openvino", {"runtime": "openvino"}),
        ("openvino bf16", {"runtime": "openvino", "precision": "bf16"}),
        ("torch bf16", {"runtime": "torch", "device": "cpu", "precision": "bf16"})])
    for stage in variants.values():
        stage.embed(texts[:64])  # warm up
    times = _rounds(variants, lambda s: s.embed(texts))
    rate = {name: len(texts) / t for name, t in times.items()}
    default, torch_stage = variants["onnxruntime"], variants["torch"]

    unique = list(dict.fromkeys(texts))
    want = default.embed(unique)
    faithful = {name: fidelity(s.embed(unique), want) for name, s in variants.items() if name != "onnxruntime"}
    figures = {"texts": len(texts), "texts_per_s": rate, "fidelity_vs_default": faithful, "skipped": skipped}
    ov = f"; openvino fp32 {rate['openvino']:.0f} texts/s" if "openvino" in rate else ""
    record("bert default (onnxruntime) / torch stage", times["torch"] / times["onnxruntime"], 1.6,
           f"{rate['onnxruntime']:.0f} vs {rate['torch']:.0f} texts/s{ov}; "
           + _fidelity_text(faithful["torch"], "same neighbour"))
    bf16 = next((n for n in ("openvino bf16", "torch bf16") if n in variants), None)
    if bf16:
        beside = ""
        if bf16 != "torch bf16" and "torch bf16" in times:
            beside = f"; torch bf16 {times['torch'] / times['torch bf16']:.2f}x"
        record(f"bert bf16 ({bf16.split()[0]}) / torch stage", times["torch"] / times[bf16], 3.0,
               f"{rate[bf16]:.0f} texts/s; " + _fidelity_text(faithful[bf16], "same neighbour") + beside)

    batches = []  # the very batches the stage runs, for the raw-runtime baseline
    forward = default.forward
    default.forward = lambda ids, mask: batches.append((ids, mask)) or forward(ids, mask)
    default.embed(texts)
    default.forward = forward
    overhead = _rounds({"stage": True, "raw": False}, lambda stage: default.embed(texts) if stage else [
        default.session.run(None, {"input_ids": i, "attention_mask": m}) for i, m in batches])
    record("bert stage / raw onnxruntime forward (same batches)", overhead["raw"] / overhead["stage"], 0.8,
           f"{len(texts) / overhead['stage']:.0f} vs {len(texts) / overhead['raw']:.0f} texts/s")
    default.config.bucketing = False
    t_plain = _rounds({"plain": default}, lambda s: s.embed(texts))["plain"]
    default.config.bucketing = True
    record("length bucketing / pad-to-longest", t_plain / times["onnxruntime"], 1.5,
           f"{rate['onnxruntime']:.0f} vs {len(texts) / t_plain:.0f} texts/s")

    n_tokens = sum(len(ids) for ids in default.tokenizer(texts, truncation=True, max_length=default.max_tokens)["input_ids"])
    params = sum(p.numel() for name, p in torch_stage.model.named_parameters() if "embeddings" not in name)
    gflops = {name: 2 * params * n_tokens * r / len(texts) / 1e9 for name, r in rate.items()}
    figures["gflops"] = gflops
    record("bert GFLOP/s (default) / best fp32 sgemm", gflops["onnxruntime"] / peak, None,
           f"{gflops['onnxruntime']:.0f} GFLOP/s on {n_tokens} real tokens ({params / 1e6:.1f}M non-embedding params) "
           f"vs {peak:.0f}; torch stage {gflops['torch']:.0f}")
    return figures


def _photo_batch() -> np.ndarray:
    """The bench's real photos (scikit-image's + crops), each also flipped and halved, cleaned to 224×224."""
    from PIL import Image

    from bench.search_data import photos
    from stages.clean_image import CleanImageConfig, clean_image

    out = []
    for image in photos().values():
        image = image.convert("RGB")
        w, h = image.size
        for variant in (image, image.transpose(Image.FLIP_LEFT_RIGHT), image.resize((max(1, w // 2), max(1, h // 2)))):
            buf = io.BytesIO()
            variant.save(buf, format="PNG")
            out.append(clean_image(buf.getvalue(), CleanImageConfig()))
    return np.stack(out)


def bench_cnn(tmp: Path, record, peak: float, scale: float = 1.0) -> dict:
    from bench.peak import conv_flops
    from pipeline.demo import _image
    from stages.clean_image import CleanImage, CleanImageConfig
    from stages.cnn import Cnn, CnnConfig, pytorch_file

    n = int(128 * scale)
    rng = np.random.default_rng(1)
    folder = tmp / "cnn_images"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [str(folder / _image(rng, "light" if i % 2 else "dark", folder / f"i{i}")) for i in range(n)]
    records = CleanImage(CleanImageConfig()).process([{"path": p} for p in paths])

    def make(**settings):
        stage = Cnn(CnnConfig(batch_size=32, **settings))
        stage.model_dir = tmp / "models"
        return stage

    variants, skipped = _variants(make, [
        ("onnxruntime", {}), ("tensorflow", {"runtime": "tensorflow"}), ("openvino", {"runtime": "openvino"}),
        ("openvino bf16", {"runtime": "openvino", "precision": "bf16"})])

    def run(stage):
        for i in range(0, n, 32):
            stage.process(records[i : i + 32])

    for stage in variants.values():
        stage.process(records[:32])  # warm up (TF traces once)
    times = _rounds(variants, run)
    rate = {name: n / t for name, t in times.items()}

    import torch

    photos = _photo_batch()
    state = torch.load(str(pytorch_file(CnnConfig().weights)), map_location="cpu", weights_only=True)
    w, b = state["_fc.weight"].numpy(), state["_fc.bias"].numpy()
    default = variants["onnxruntime"]
    want = default.features(photos)
    faithful = {}
    for name, stage in variants.items():
        if name != "onnxruntime":
            got = stage.features(photos)
            faithful[name] = fidelity(got, want, (got @ w.T + b).argmax(1) == (want @ w.T + b).argmax(1))
    figures = {"images": n, "photos_for_fidelity": len(photos), "images_per_s": rate, "fidelity_vs_default": faithful,
               "skipped": skipped}
    ov = f"; openvino fp32 {rate['openvino']:.0f} images/s" if "openvino" in rate else ""
    record("cnn default (onnxruntime) / tensorflow stage", times["tensorflow"] / times["onnxruntime"], 1.4,
           f"{rate['onnxruntime']:.0f} vs {rate['tensorflow']:.0f} images/s{ov}; "
           + _fidelity_text(faithful["tensorflow"], "same class"))
    if "openvino bf16" in variants:
        record("cnn bf16 (openvino) / tensorflow stage", times["tensorflow"] / times["openvino bf16"], 3.0,
               f"{rate['openvino bf16']:.0f} images/s; " + _fidelity_text(faithful["openvino bf16"], "same class")
               + f" on {len(photos)} real photos")

    ready = [default.preprocess(np.stack([r["image"] for r in records[i : i + 32]])) for i in range(0, n, 32)]
    overhead = _rounds({"stage": True, "raw": False}, lambda stage: run(default) if stage else [
        default.session.run(None, {"image": x}) for x in ready])
    record("cnn stage / raw onnxruntime forward (same batches)", overhead["raw"] / overhead["stage"], 0.8,
           f"{n / overhead['stage']:.0f} vs {n / overhead['raw']:.0f} images/s")
    graph = next((tmp / "models" / "backbones").glob("*.onnx")).read_bytes()
    flops = conv_flops(graph, 224, 224)
    gflops = {name: flops * r / 1e9 for name, r in rate.items()}
    figures.update(gflops=gflops, gflop_per_image=flops / 1e9)
    record("cnn GFLOP/s (default) / best fp32 sgemm", gflops["onnxruntime"] / peak, None,
           f"{gflops['onnxruntime']:.0f} GFLOP/s ({flops / 1e9:.2f} GFLOP per image) vs {peak:.0f}; "
           f"tensorflow stage {gflops['tensorflow']:.0f}")
    return figures


if __name__ == "__main__":
    from bench.alone import run_alone
    from bench.peak import sgemm_rates

    rates = sgemm_rates()
    print("fp32 sgemm GFLOP/s:", {k: round(v) for k, v in rates.items()})
    peak = max(rates.values())
    run_alone(lambda tmp, record: {"bert": bench_bert(tmp, record, peak), "cnn": bench_cnn(tmp, record, peak)})
