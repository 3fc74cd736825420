"""Multimodal feature pipeline: manifests -> cleaned modalities -> features -> fused model.

Orchestration lives here (config, manifests, keys, cache store, runner, CLI); each stage is a
module in the sibling package ``stages``.
"""

__version__ = "0.1.0"
