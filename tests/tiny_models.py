"""Tiny models built and saved by the tests, loaded back through the stages' real loading code."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

WORDS = "the a man is eating food bread piece of riding horse login password payment refund cannot app crash".split()
# Single characters and their word-piece continuations: any ASCII word tokenizes into known pieces,
# so different texts get different vectors even with this tiny vocabulary.
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789")
# The tiny BERT every CLI-level test uses (dummies.SMALL); built once per test session by conftest.py.
SHARED_TINY_BERT = Path(os.environ.get("MMP_TEST_TINY_BERT", Path(tempfile.gettempdir()) / f"mmpipe-test-tiny-bert-{os.getuid()}-v4"))


def tiny_bert(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + CHARS + [f"##{c}" for c in CHARS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 ignores `vocab_file=` here (it builds a 5-token vocabulary: every word [UNK]); pass the vocab.
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)})
    if tokenizer.tokenize("login crash xyz") != ["login", "crash", "x", "##y", "##z"]:
        raise RuntimeError(f"tiny BERT tokenizer is broken: {tokenizer.tokenize('login crash xyz')}")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)  # bert.max_length defaults to 128
    BertModel(config).eval().save_pretrained(folder, safe_serialization=True)
    return folder


def shared_tiny_bert() -> Path:
    """SHARED_TINY_BERT, built if absent (in a temp folder renamed into place: concurrent sessions are safe)."""
    if (SHARED_TINY_BERT / "model.safetensors").is_file():
        return SHARED_TINY_BERT
    SHARED_TINY_BERT.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=SHARED_TINY_BERT.name + ".", dir=SHARED_TINY_BERT.parent))
    tiny_bert(building)
    try:
        os.rename(building, SHARED_TINY_BERT)
    except OSError:  # another session got there first; its files are identical (seeded)
        shutil.rmtree(building, ignore_errors=True)
    return SHARED_TINY_BERT


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
