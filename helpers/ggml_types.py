"""ggml's number formats: block size, bytes per block and bits per weight.

Every quantized ggml type stores weights in *blocks*: a fixed number of weights (32 for the
``_0``/``_1`` types, 256 for the k-quants) share a few scale bytes. The table is read from the
``gguf`` package (``GGML_QUANT_SIZES``), which mirrors ggml's own ``type_traits`` — never typed
by hand, so it cannot drift from the file format.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class GgmlType:
    name: str
    block_size: int  # weights per block
    type_size: int  # bytes per block

    @property
    def bits_per_weight(self) -> float:
        return self.type_size * 8 / self.block_size

    @property
    def is_quantized(self) -> bool:
        return self.name not in ("F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64")

    def row_bytes(self, n: int) -> int:
        """Bytes of one row of ``n`` weights (``n`` must be a multiple of the block size)."""
        if n % self.block_size:
            raise ValueError(f"a row of {n} weights cannot be stored as {self.name} "
                             f"(needs a multiple of {self.block_size})")
        return n // self.block_size * self.type_size

    def tensor_bytes(self, shape: tuple[int, ...]) -> int:
        """Bytes of a tensor with numpy shape ``(rows, …, columns)``; rows are quantized along columns."""
        rows = 1
        for d in shape[:-1]:
            rows *= d
        return rows * self.row_bytes(shape[-1])


@cache
def ggml_types() -> dict[str, GgmlType]:
    """All ggml types the ``gguf`` package knows, by name (``Q5_K``, ``F16`` …)."""
    import gguf

    return {t.name: GgmlType(t.name, *gguf.GGML_QUANT_SIZES[t]) for t in gguf.GGMLQuantizationType
            if t in gguf.GGML_QUANT_SIZES}


def ggml_type(name: str) -> GgmlType:
    """Look a type up by name (case-insensitive); unknown names list the valid ones."""
    types = ggml_types()
    key = name.strip().upper()
    if key not in types:
        raise ValueError(f"unknown ggml type {name!r}; known: {', '.join(sorted(types))}")
    return types[key]


def type_by_id(type_id: int) -> GgmlType:
    import gguf

    return ggml_type(gguf.GGMLQuantizationType(type_id).name)
