"""Declared outputs: what each field of a stage's output record is, checked before every commit.

A stage declares ``outputs`` (or overrides ``output_spec()`` when shapes depend on config or model):
field name -> ``Field(dtype, shape)``. ``dtype`` is a numpy dtype name for arrays (``float32``,
``uint8``) or ``str`` / ``int`` / ``float`` for plain values; ``shape`` lists the array's dimensions,
``None`` for one known only at run time. The runner checks every record against the spec before it is
committed; a mismatch is a per-item error (``OutputMismatch``) naming the stage, the item and the field.
The spec is also written into every shard's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PLAIN = {"str": (str,), "int": (int,), "float": (float, int)}


@dataclass(frozen=True)
class Field:
    dtype: str
    shape: tuple[int | None, ...] = ()

    @property
    def is_array(self) -> bool:
        return self.dtype not in PLAIN

    def describe(self) -> str:
        if not self.is_array:
            return self.dtype
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype} ({dims}{',' if len(self.shape) == 1 else ''})"


def check_record(spec: dict[str, Field], record: dict[str, Any]) -> str | None:
    """None if the record matches the spec; otherwise what is wrong, in words."""
    import numpy as np

    missing, extra = sorted(set(spec) - set(record)), sorted(set(record) - set(spec))
    if missing or extra:
        parts = ([f"missing field(s) {missing}"] if missing else []) + ([f"undeclared field(s) {extra}"] if extra else [])
        return "; ".join(parts) + f" (declared: {sorted(spec)})"
    for name, field in spec.items():
        value = record[name]
        if field.is_array:
            if not isinstance(value, np.ndarray):
                return f"field {name!r} is {type(value).__name__}, declared an array {field.describe()}"
            shape_ok = value.ndim == len(field.shape) and all(d is None or d == n for d, n in zip(field.shape, value.shape))
            if value.dtype != np.dtype(field.dtype) or not shape_ok:
                return f"field {name!r} is {value.dtype} {tuple(value.shape)}, declared {field.describe()}"
        else:
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, PLAIN[field.dtype]):
                return f"field {name!r} is {type(value).__name__} {value!r:.40}, declared {field.dtype}"
    return None


def schema(spec: dict[str, Field]) -> dict[str, list]:
    """The spec as plain JSON: field -> [dtype, shape] (shape entries null when known only at run time)."""
    return {name: [f.dtype, list(f.shape)] for name, f in sorted(spec.items())}
