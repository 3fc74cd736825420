"""Which split (train / val / test) each item is in: the manifest's, or a seeded stratified one.

Both ``fuse`` (statistics are fitted on the train split only) and ``train`` use the same assignment;
the seed and fractions are ``train.seed``, ``train.val_fraction`` and ``train.test_fraction``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any


def assign_splits(items, cfg: Any) -> dict[str, str]:
    """The manifest's splits; a seeded stratified split for labelled items without one."""
    given = {i.id: i.split for i in items if i.split}
    missing = [i for i in items if not i.split and i.label]
    if missing:
        from sklearn.model_selection import train_test_split

        ids, labels = [i.id for i in missing], [i.label for i in missing]
        strat = labels if min(labels.count(x) for x in set(labels)) >= 3 else None
        rest, test = train_test_split(ids, test_size=cfg.test_fraction, random_state=cfg.seed, stratify=strat)
        rest_labels = [labels[ids.index(r)] for r in rest] if strat else None
        train, val = train_test_split(rest, test_size=cfg.val_fraction / (1 - cfg.test_fraction), random_state=cfg.seed,
                                      stratify=rest_labels)
        given.update({i: "train" for i in train} | {i: "val" for i in val} | {i: "test" for i in test})
    return given


def with_splits(items, cfg: Any) -> list:
    """Items with their assigned split filled in (the manifest's own split is kept)."""
    splits = assign_splits(items, cfg)
    return [item if item.split or item.id not in splits else replace(item, split=splits[item.id]) for item in items]
