"""Which ggml type llama-quantize gives each tensor, for each quantization preset.

A preset such as ``Q5_K_M`` is not one type but a *mix*: most weights get the preset's base
type (Q5_K) while tensors that hurt quality most when squeezed — ``attn_v`` and ``ffn_down``
in some layers, and the output matrix — get more bits (Q6_K). These rules are a faithful
port of ``llama_tensor_get_type_impl``, ``tensor_type_fallback`` and
``tensor_allows_quantization`` in ``src/llama-quant.cpp`` at our pinned llama.cpp commit
(0c1e570), restricted to dense (non-MoE) Llama-family models. The tests check every rule
against the real ``llama-quantize`` on synthetic models.
"""

from __future__ import annotations

from dataclasses import dataclass

from helpers.ggml_types import ggml_type
from helpers.model_shape import ModelShape


@dataclass(frozen=True)
class Preset:
    name: str
    base: str  # the default tensor type (llama_ftype_get_default_type)
    ftype: int  # LLAMA_FTYPE_* value written to general.file_type
    description: str


#: The presets the course explains, with llama.cpp's file-type ids (include/llama.h).
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("F32", "F32", 0, "32-bit floats: the training precision, 4 bytes a weight"),
    Preset("F16", "F16", 1, "16-bit floats: the usual released precision"),
    Preset("BF16", "BF16", 32, "bfloat16: F32's range with 8 bits of mantissa"),
    Preset("Q8_0", "Q8_0", 7, "8-bit, one scale per 32 weights; near-lossless"),
    Preset("Q6_K", "Q6_K", 18, "6-bit k-quant everywhere"),
    Preset("Q5_K_M", "Q5_K", 17, "5-bit k-quant; attn_v/ffn_down of key layers and the output in Q6_K"),
    Preset("Q5_K_S", "Q5_K", 16, "5-bit k-quant, no upgrades except the output"),
    Preset("Q5_1", "Q5_1", 9, "5-bit with scale and offset per 32 weights"),
    Preset("Q5_0", "Q5_0", 8, "5-bit with one scale per 32 weights"),
    Preset("Q4_K_M", "Q4_K", 15, "4-bit k-quant; attn_v/ffn_down of key layers in Q6_K"),
    Preset("Q4_K_S", "Q4_K", 14, "4-bit k-quant; first attn_v/ffn_down layers in Q5_K"),
    Preset("IQ4_XS", "IQ4_XS", 30, "4.25-bit non-linear quant; benefits from an importance matrix"),
    Preset("Q4_1", "Q4_1", 3, "4-bit with scale and offset per 32 weights"),
    Preset("Q4_0", "Q4_0", 2, "4-bit with one scale per 32 weights"),
    Preset("Q3_K_L", "Q3_K", 13, "3-bit k-quant with Q5_K attention-v/ffn_down/attn_output"),
    Preset("Q3_K_M", "Q3_K", 12, "3-bit k-quant with Q4_K/Q5_K upgrades"),
    Preset("Q3_K_S", "Q3_K", 11, "3-bit k-quant everywhere"),
    Preset("Q2_K", "Q2_K", 10, "2-bit k-quant with Q3_K/Q4_K upgrades"),
)}

# tensor_type_fallback: a type whose block does not divide the row falls back to these.
_FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "IQ4_XS": "IQ4_NL"}


def preset(name: str) -> Preset:
    """Look a preset up by name (case-insensitive); unknown names list the existing ones."""
    key = name.strip().upper()
    if key not in PRESETS:
        raise ValueError(f"unknown quantization {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[key]


def _use_more_bits(i: int, n: int) -> bool:
    """The layers llama.cpp protects in *_K_M mixes: first and last eighth, and every third."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name == "token_embd.weight":
        return "token_embd"
    for cat in ("attn_v", "attn_k", "attn_q", "attn_output", "ffn_up", "ffn_gate", "ffn_down"):
        if f"{cat}.weight" in name:
            return cat
    return "other"


def _quantizable(name: str, shape: tuple[int, ...]) -> bool:
    """tensor_allows_quantization, for the tensors a dense Llama-family model has."""
    return len(shape) >= 2 and name.endswith("weight") and "_norm.weight" not in name


def _fallback(t: str, ncols: int) -> str:
    if ncols % ggml_type(t).block_size == 0:
        return t
    t2 = _FALLBACK.get(t, t)
    return t2 if ncols % ggml_type(t2).block_size == 0 else "F16"


def tensor_types(shape: ModelShape, quant: str, imatrix: bool = False,
                 source_types: dict[str, str] | None = None) -> dict[str, str]:
    """The ggml type of every tensor after ``llama-quantize … quant`` (name -> type name).

    ``source_types`` are the types in the input file (default: 1-D tensors F32, the rest
    F16, as convert_hf_to_gguf writes them); tensors that are never quantized keep them.
    """
    p = preset(quant)
    n_layer = shape.n_layer
    gqa = shape.n_gqa
    is_70b = shape.arch == "llama" and n_layer == 80  # llama.cpp's LLM_TYPE_70B
    i_attn_v = i_ffn_down = 0
    out: dict[str, str] = {}
    # llama-quantize visits tensors ordered by layer; counters follow that order.
    for name, dims in shape.tensors():
        src = (source_types or {}).get(name) or ("F32" if len(dims) == 1 else "F16")
        if not _quantizable(name, dims):
            out[name] = src
            continue
        t = p.base
        if not ggml_type(t).is_quantized:
            out[name] = t
            continue
        cat = _category(name)
        ncols = dims[-1]
        if cat == "output" or (shape.tied and cat == "token_embd"):
            if ncols % ggml_type(t).block_size != 0:
                t = "Q8_0"
            elif t != "Q8_0":
                t = "Q6_K"
        elif cat == "attn_v":
            q = p.name
            if q == "Q2_K":
                t = "Q4_K" if gqa >= 4 else "Q3_K"
            elif q == "Q3_K_M":
                t = "Q5_K" if i_attn_v < 2 else "Q4_K"
            elif q == "Q3_K_L":
                t = "Q5_K"
            elif q == "IQ4_XS" and gqa >= 4:
                t = "Q5_K"
            elif q in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i_attn_v, n_layer):
                t = "Q6_K"
            elif q == "Q4_K_S" and i_attn_v < 4:
                t = "Q5_K"
            if is_70b and t in ("Q3_K", "Q4_K"):
                t = "Q5_K"
            i_attn_v += 1
        elif cat == "ffn_down":
            i, q = i_ffn_down, p.name
            if q == "Q2_K":
                t = "Q3_K"
            elif q == "Q3_K_M":
                t = "Q5_K" if i < n_layer // 16 else "Q4_K"
            elif q == "Q3_K_L":
                t = "Q5_K"
            elif q == "Q4_K_M":
                if _use_more_bits(i, n_layer):
                    t = "Q6_K"
            elif i < n_layer // 8 and q == "IQ4_XS" and not imatrix:
                t = "Q5_K"
            elif q == "Q5_K_M" and _use_more_bits(i, n_layer):
                t = "Q6_K"
            elif q == "Q4_K_S" and i < n_layer // 8:
                t = "Q5_K"
            elif q in ("Q4_0", "Q5_0") and imatrix and i < n_layer // 8:
                t = "Q4_1" if q == "Q4_0" else "Q5_1"
            i_ffn_down += 1
        elif cat == "attn_output":
            t = {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"}.get(p.name, t)
        out[name] = _fallback(t, ncols)
    return out


def type_histogram(types: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in types.values():
        counts[t] = counts.get(t, 0) + 1
    return dict(sorted(counts.items()))


def bits_per_weight(shape: ModelShape, quant: str, imatrix: bool = False) -> float:
    """Average bits per weight of the whole mix (what "Q5_K_M is ~5.7 bpw" means)."""
    types = tensor_types(shape, quant, imatrix)
    dims = dict(shape.tensors())
    total_bits = sum(ggml_type(t).tensor_bytes(dims[n]) * 8 for n, t in types.items())
    return total_bits / shape.parameter_count()


def quantize(source: str, target: str, quant: str, timeout_s: float = 1800) -> str:
    """Run the real ``llama-quantize SOURCE TARGET quant``; return the target path.

    Written to a temporary name and renamed, so a failed run never leaves a file that looks
    finished. Errors carry llama-quantize's last log lines.
    """
    import os

    from helpers import llamacpp, process
    from helpers.errors import LlamaProcessError

    preset(quant)
    tmp = f"{target}.tmp-{os.getpid()}"
    proc = process.run([str(llamacpp.binary("llama-quantize")), str(source), tmp, preset(quant).name],
                       timeout=timeout_s)
    if proc.returncode != 0:
        if os.path.exists(tmp):
            os.unlink(tmp)
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise LlamaProcessError(f"llama-quantize failed with {process.describe_exit(proc.returncode)}",
                                proc.returncode, tail)
    os.replace(tmp, target)
    return str(target)


def error_ladder(source: str, presets: list[str], workdir: str) -> list[dict[str, float | str]]:
    """Quantize ``source`` to each preset and measure size and error: the quality/size trade-off.

    Returns one row per preset: bits per weight of the whole file's weights and the overall
    relative RMS error of all quantized matrices (each matrix weighted by its size).
    """
    import os

    import gguf
    import numpy as np

    from helpers.gguf_header import read_local

    shape = read_local(source).shape()
    ref = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
           for t in gguf.GGUFReader(source).tensors if len(t.shape) >= 2}
    rows = []
    for q in presets:
        target = quantize(source, os.path.join(workdir, f"{os.path.basename(source)}.{q}.gguf"), q)
        err2 = norm2 = 0.0
        for t in gguf.GGUFReader(target).tensors:
            if t.name in ref:
                w = ref[t.name]
                err2 += float(np.sum((gguf.quants.dequantize(t.data, t.tensor_type) - w) ** 2))
                norm2 += float(np.sum(w**2))
        rows.append({"preset": preset(q).name, "bits_per_weight": bits_per_weight(shape, q),
                     "relative_rmse": (err2 / norm2) ** 0.5, "file_bytes": os.path.getsize(target)})
    return rows
