"""The three-branch Keras model: one named input per block (message, screenshot, voice note, and the words
on the screenshot and in the note), a tower per branch, masks, fusion, softmax head.

Builders are small named functions returning named sub-models; custom layers are registered so a saved
``.keras`` file loads with ``safe_mode=True`` (no Lambda layers, no pickled code).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

from .fuse import BRANCHES

PACKAGE = "mmpipe"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ApplyMask(layers.Layer):
    """x * mask: an absent modality (mask 0) contributes exactly zero."""

    def call(self, x, mask):
        return x * mask


@keras.saving.register_keras_serializable(package=PACKAGE)
class ModalityDropout(layers.Layer):
    """In training, drop each present modality of a sample with probability ``rate`` (never all of them)."""

    def __init__(self, rate: float = 0.0, seed: int = 0, **kw):
        super().__init__(**kw)
        self.rate, self.seed = rate, seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, masks, training=None):
        if not training or self.rate <= 0:
            return masks
        draw = keras.random.uniform(ops.shape(masks), seed=self.generator)
        dropped = masks * ops.cast(draw >= self.rate, masks.dtype)
        # Where every present modality was dropped, keep one of them (the one with the highest draw).
        one = ops.one_hot(ops.argmax(draw * masks, axis=-1), ops.shape(masks)[-1], dtype=masks.dtype) * masks
        none_left = ops.sum(dropped, axis=-1, keepdims=True) == 0
        return ops.where(none_left, one, dropped)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedAttentionPool(layers.Layer):
    """(batch, modalities, width) + (batch, modalities) masks -> (batch, width): attention over present
    modalities only."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.score = layers.Dense(1, name="score")

    def build(self, stacked_shape, masks_shape=None):
        self.score.build(stacked_shape)
        super().build(stacked_shape)

    def get_config(self) -> dict[str, Any]:
        return super().get_config()

    def call(self, stacked, masks):
        logits = ops.squeeze(self.score(stacked), -1) + (1.0 - masks) * -1e9
        weights = ops.softmax(logits, axis=-1)
        return ops.sum(stacked * ops.expand_dims(weights, -1), axis=1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SelectColumn(layers.Layer):
    """(batch, k) -> (batch, 1): one modality's mask out of the stacked masks."""

    def __init__(self, index: int = 0, **kw):
        super().__init__(**kw)
        self.index = index

    def call(self, x):
        return x[:, self.index : self.index + 1]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "index": self.index}


def build_branch(name: str, dim: int, width: int, dropout: float) -> keras.Model:
    """One modality's tower: Dense -> LayerNorm -> ReLU -> Dropout -> Dense."""
    x_in = keras.Input((dim,), name=f"{name}_features")
    x = layers.Dense(width, name=f"{name}_dense1")(x_in)
    x = layers.LayerNormalization(name=f"{name}_norm")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    x = layers.Dense(width, activation="relu", name=f"{name}_dense2")(x)
    return keras.Model(x_in, x, name=f"{name}_tower")


def build_head(width: int, n_classes: int, dropout: float, fused_dim: int) -> keras.Model:
    x_in = keras.Input((fused_dim,), name="fused")
    x = layers.Dense(width, activation="relu", name="head_dense")(x_in)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return keras.Model(x_in, layers.Dense(n_classes, activation="softmax", name="probabilities")(x), name="head")


def build_model(dims: dict[str, int], n_classes: int, cfg) -> keras.Model:
    """dims: block -> feature size, for the blocks this model uses (in ``MODALITIES`` order). Blocks are
    grouped into the three branches of ``BRANCHES`` (text; image + screen text; audio + transcript): each
    branch's tower sees its blocks, each multiplied by its own mask, and the masks themselves, so a voice
    note without speech still contributes its MFCCs. A branch is present when any of its blocks is."""
    names = list(dims)
    inputs = {m: keras.Input((dims[m],), name=m) for m in names}
    masks_in = {m: keras.Input((1,), name=f"{m}_mask") for m in names}
    masks = layers.Concatenate(name="masks")([masks_in[m] for m in names]) if len(names) > 1 else masks_in[names[0]]
    masks = ModalityDropout(cfg.modality_dropout if len(names) > 1 else 0.0, seed=cfg.seed, name="modality_dropout")(masks)
    block_mask = {m: SelectColumn(k, name=f"{m}_mask_used")(masks) if len(names) > 1 else masks for k, m in enumerate(names)}
    branches = [(b, [m for m in blocks if m in dims]) for b, blocks in BRANCHES.items()]
    branches = [(b, blocks) for b, blocks in branches if blocks]
    towers, branch_masks = [], []
    for b, blocks in branches:
        if len(blocks) == 1:
            x, mask, dim = inputs[blocks[0]], block_mask[blocks[0]], dims[blocks[0]]
        else:
            parts = [ApplyMask(name=f"{m}_block")(inputs[m], block_mask[m]) for m in blocks]
            x = layers.Concatenate(name=f"{b}_blocks")(parts + [block_mask[m] for m in blocks])
            mask = layers.Maximum(name=f"{b}_mask_any")([block_mask[m] for m in blocks])
            dim = sum(dims[m] for m in blocks) + len(blocks)
        towers.append(ApplyMask(name=f"{b}_masked")(build_branch(b, dim, cfg.width, cfg.dropout)(x), mask))
        branch_masks.append(mask)
    bmasks = layers.Concatenate(name="branch_masks")(branch_masks) if len(towers) > 1 else branch_masks[0]
    if cfg.fusion == "stack" and len(towers) > 1:
        stacked = layers.Concatenate(axis=1, name="stack")([layers.Reshape((1, cfg.width), name=f"{b}_row")(t)
                                                           for (b, _), t in zip(branches, towers)])
        fused = MaskedAttentionPool(name="attention_pool")(stacked, bmasks)
    else:
        fused = layers.Concatenate(name="concat")(towers + [bmasks]) if len(towers) > 1 else towers[0]
    out = build_head(cfg.head_width, n_classes, cfg.dropout, fused.shape[-1])(fused)
    name = "three_branch" if len(towers) == 3 else "_".join(b for b, _ in branches)
    return keras.Model({**inputs, **{f"{m}_mask": masks_in[m] for m in names}}, out, name=name)
