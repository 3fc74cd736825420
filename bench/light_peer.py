"""The peer of bench/light.py: what a Hugging Face user writes to embed a CSV of tickets and keep the result
cached — ``datasets.load_dataset("csv", cache_dir=...)`` then ``.map(embed, batched=True, batch_size=32)``,
``embed`` tokenizing with transformers' ``AutoTokenizer`` and running ``AutoModel`` under
``torch.inference_mode()`` with masked mean pooling (the same all-MiniLM-L6-v2 folder ``bert`` uses).

``python -m bench.light_peer CSV CACHE_DIR MODEL_DIR`` prints one JSON line: rows in the dataset and rows
``embed`` was called on in this process (0 when the map came from datasets' cache). Run in a fresh
process by bench/light.py; ``datasets`` is an optional bench-only package, imported inside ``main``.
"""

from __future__ import annotations

import json
import sys


def main(csv: str, cache_dir: str, model_dir: str) -> dict:
    import torch
    from datasets import disable_progress_bars, load_dataset
    from transformers import AutoModel, AutoTokenizer

    disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    embedded = [0]

    def embed(batch):
        embedded[0] += len(batch["text"])
        enc = tokenizer(batch["text"], padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return {"embedding": ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy()}

    ds = load_dataset("csv", data_files=csv, cache_dir=cache_dir)["train"]
    ds = ds.map(embed, batched=True, batch_size=32)
    return {"rows": len(ds), "embedded": embedded[0], "dim": len(ds[0]["embedding"])}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])), flush=True)
