"""Tiny models built and saved by the tests, loaded back through the stages' real loading code."""

from __future__ import annotations

from pathlib import Path

WORDS = "the a man is eating food bread piece of riding horse login password payment refund cannot app crash".split()


def tiny_bert(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + list("abcdefghijklmnopqrstuvwxyz")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 takes `vocab=`; it silently ignores `vocab_file=` (every word became [UNK])
    BertTokenizerFast(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_cnn(path: Path, size: int = 32, alpha: float = 0.35):
    """A MobileNetV2 backbone saved whole (.keras) or as weights (.weights.h5)."""
    import keras

    keras.utils.set_random_seed(1)
    model = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(size, size, 3),
                                           pooling="avg", alpha=alpha)
    if path.name.endswith(".weights.h5"):
        model.save_weights(path)
    else:
        model.save(path)
    return model
