"""How big a GGUF file is: every tensor in the type its quantization preset gives it, plus the header.

Web calculators multiply parameters by bytes per parameter. Here the size is derived the way
llama-quantize writes the file, so it can be checked against real files to the byte:

* **file size** = header (metadata, tokenizer, tensor list) + every tensor in the type the
  quantization preset gives it (:mod:`helpers.quant`), each padded to 32 bytes.

The rule of thumb (parameters × bytes per parameter) is here too, as the first estimate
notebook 01 starts from.
"""

from __future__ import annotations

from helpers.ggml_types import ggml_type
from helpers.gguf_header import GgufHeader
from helpers.model_shape import ModelShape
from helpers.quant import tensor_types

MIB = 2**20
ALIGN = 32  # GGUF's default tensor alignment


def pad(n: int, align: int = ALIGN) -> int:
    """``n`` rounded up to a multiple of ``align``."""
    return -(-n // align) * align


#: Bytes of the ``tokenizer.ggml.*`` metadata (vocabulary, token types, merges, special ids)
#: in real GGUF files, measured from the tokenizer-only GGUFs in llama.cpp's ``models/``
#: folder with :func:`tokenizer_bytes` (a test re-measures them from the pinned source).
TOKENIZER_METADATA_BYTES = {
    "qwen2": 5_927_847,  # Qwen2/2.5/3, vocabulary 151,936
    "llama-bpe": 7_817_598,  # Llama 3.x, vocabulary 128,256
    "llama-spm": 723_363,  # Llama 2, Mistral 7B v0.1, vocabulary 32,000
}
#: Architecture keys, general.* keys and the chat template of a typical converted model.
OTHER_METADATA_BYTES = 8_000


def tokenizer_bytes(header: GgufHeader) -> int:
    """Bytes the tokenizer takes in a GGUF header (the ``tokenizer.ggml.*`` keys)."""
    return sum(n for key, n in header.kv_bytes.items() if key.startswith("tokenizer.ggml."))


_TOKENIZER_VOCAB = {"qwen2": 151936, "llama-bpe": 128256, "llama-spm": 32000}


def tokenizer_family(shape: ModelShape) -> str | None:
    """Which measured tokenizer a model uses (Qwen's vocabularies differ only in padding)."""
    if shape.arch in ("qwen2", "qwen3") and 151643 <= shape.n_vocab <= 152064:
        return "qwen2"
    if shape.arch == "llama" and shape.n_vocab == 128256:
        return "llama-bpe"
    if shape.arch == "llama" and shape.n_vocab == 32000:
        return "llama-spm"
    return None


def tensor_info_bytes(shape: ModelShape) -> int:
    """Exact size of the tensor list in the header (name, dims, type, offset per tensor)."""
    return sum(8 + len(name) + 4 + 8 * len(dims) + 4 + 8 for name, dims in shape.tensors())


def estimated_header_bytes(shape: ModelShape) -> int:
    """Header size of a converted model: exact tensor list, measured tokenizer, estimated rest."""
    family = tokenizer_family(shape)
    if family:  # padding tokens ("[PAD151936]", ~25 bytes with their type) beyond the measured vocabulary
        tokenizer = TOKENIZER_METADATA_BYTES[family] + (shape.n_vocab - _TOKENIZER_VOCAB[family]) * 25
    else:
        tokenizer = shape.n_vocab * 39  # the qwen2 tokenizer's average bytes per token
    return pad(24 + OTHER_METADATA_BYTES + tokenizer + tensor_info_bytes(shape))


def tensor_data_bytes(shape: ModelShape, quant: str, imatrix: bool = False,
                      types: dict[str, str] | None = None) -> dict[str, int]:
    """Bytes of each tensor after quantization (unpadded); ``types``: the types a file already has.

    Their sum is what llama.cpp prints as the model's "file size" (the weights, without the header).
    """
    dims = dict(shape.tensors())
    types = types or tensor_types(shape, quant, imatrix)
    return {name: ggml_type(t).tensor_bytes(dims[name]) for name, t in types.items()}


def file_size(shape: ModelShape, quant: str, imatrix: bool = False, header_bytes: int | None = None) -> int:
    """Predicted size in bytes of the GGUF file for ``quant``.

    ``header_bytes``: the exact header size when known (e.g. from the F16 file being
    quantized — llama-quantize copies the metadata unchanged); otherwise estimated.
    """
    header = estimated_header_bytes(shape) if header_bytes is None else header_bytes
    return header + sum(pad(n) for n in tensor_data_bytes(shape, quant, imatrix).values())


def quantized_file_size(source: GgufHeader, quant: str, imatrix: bool = False) -> int:
    """Exact prediction for ``llama-quantize SOURCE OUT quant``: same header, new tensor types."""
    header = source.data_offset
    if "general.quantization_version" not in source.kv:  # llama-quantize adds this u32 key
        header = pad(source.header_end + 8 + len("general.quantization_version") + 4 + 4, source.alignment)
    source_types = {t.name: t.type.name for t in source.tensors}
    shape = source.shape()
    dims = dict(shape.tensors())
    types = tensor_types(shape, quant, imatrix, source_types=source_types)
    return header + sum(pad(ggml_type(t).tensor_bytes(dims[n])) for n, t in types.items())


#: Bytes per parameter of the plain number formats the rule of thumb uses.
RULE_OF_THUMB_BYTES = {"FP32": 4.0, "FP16": 2.0, "INT8": 1.0, "INT4": 0.5}


def rule_of_thumb(shape: ModelShape) -> dict[str, float]:
    """Weights-only memory in GB (decimal) for each plain format: parameters × bytes."""
    n = shape.parameter_count()
    return {fmt: n * b / 1e9 for fmt, b in RULE_OF_THUMB_BYTES.items()}
