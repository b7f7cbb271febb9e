"""Predict what llama.cpp will write and allocate — file size, memory breakdown, speed limit.

Web calculators multiply parameters by bytes and add a fudge factor. Here every number is
derived the way llama.cpp derives it, so it can be checked against llama.cpp's own output:

* **file size** = header (metadata, tokenizer, tensor list) + every tensor in the type the
  quantization preset gives it (:mod:`helpers.quant`), each padded to 32 bytes;
* **model** memory = the same tensor bytes, split between the GPU (all layers and the output
  matrix) and the host (``token_embd`` — llama.cpp only ever looks up rows of it);
* **context** = the KV cache: n_ctx (rounded up to 256) × layers × 2 (K and V) × KV width ×
  bytes per element of the cache type;
* **compute** = the largest set of intermediate tensors alive at once in one forward pass of
  n_ubatch tokens. For dense models it is either the feed-forward block of a layer
  (3·n_ff + 4·n_embd floats per token, plus the attention mask) or the output layer (the
  logits, n_vocab floats per token); without flash attention the attention scores
  (n_ctx × n_head floats per token) usually win. These formulas reproduce the buffers that
  ``sched_reserve`` prints at our pinned commit (see tests/test_memory.py).

Sizes are in bytes internally and MiB (2**20) where shown, like llama.cpp's breakdown.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from helpers.cpu_buffers import PLAIN_CPU, CpuFeatures, host_buffers
from helpers.ggml_types import ggml_type
from helpers.gguf_header import GgufHeader
from helpers.model_shape import ModelShape
from helpers.quant import PRESETS, tensor_types

MIB = 2**20
ALIGN = 32
KV_TYPES = ("f16", "bf16", "f32", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl")


def _pad(n: int, align: int = ALIGN) -> int:
    return -(-n // align) * align


# --- file size ------------------------------------------------------------------------
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
    return _pad(24 + OTHER_METADATA_BYTES + tokenizer + tensor_info_bytes(shape))


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
    return header + sum(_pad(n) for n in tensor_data_bytes(shape, quant, imatrix).values())


def quantized_file_size(source: GgufHeader, quant: str, imatrix: bool = False) -> int:
    """Exact prediction for ``llama-quantize SOURCE OUT quant``: same header, new tensor types."""
    header = source.data_offset
    if "general.quantization_version" not in source.kv:  # llama-quantize adds this u32 key
        header = _pad(source.header_end + 8 + len("general.quantization_version") + 4 + 4, source.alignment)
    source_types = {t.name: t.type.name for t in source.tensors}
    shape = source.shape()
    dims = dict(shape.tensors())
    types = tensor_types(shape, quant, imatrix, source_types=source_types)
    return header + sum(_pad(ggml_type(t).tensor_bytes(dims[n])) for n, t in types.items())


# --- memory ---------------------------------------------------------------------------
def padded_ctx(n_ctx: int) -> int:
    """llama.cpp rounds the context up to a multiple of 256 (llama-context.cpp)."""
    return _pad(n_ctx, 256)


def _kv_type(kv_type: str):  # noqa: ANN202
    if kv_type.lower() not in KV_TYPES:
        raise ValueError(f"unknown KV cache type {kv_type!r}; choose one of {', '.join(KV_TYPES)}")
    return ggml_type(kv_type)


def kv_bytes_per_token(shape: ModelShape, kv_type: str = "f16") -> int:
    return 2 * shape.n_layer * _kv_type(kv_type).row_bytes(shape.n_embd_kv)


def kv_cache_bytes(shape: ModelShape, n_ctx: int, kv_type: str = "f16", n_layers: int | None = None) -> int:
    """K and V for every position of the (padded) context, for ``n_layers`` layers (default all)."""
    layers = shape.n_layer if n_layers is None else n_layers
    return padded_ctx(n_ctx) * 2 * layers * _kv_type(kv_type).row_bytes(shape.n_embd_kv)


def compute_bytes(shape: ModelShape, n_ctx: int, n_ubatch: int = 512, flash_attn: bool = True,
                  on_gpu: bool = False) -> tuple[int, int]:
    """(device compute buffer, host compute buffer) in bytes.

    CPU only: everything is one host buffer (second value 0). Fully offloaded to a GPU: the
    GPU holds the forward pass, the host keeps the token-embedding lookup output (2 ×
    n_embd floats per token) and the attention mask it uploads.
    """
    c = padded_ctx(n_ctx)
    u = min(n_ubatch, c)
    e, f, v = shape.n_embd, shape.n_ff, shape.n_vocab
    mask = c * u * (2 if flash_attn else 4)  # F16 mask with flash attention, F32 without
    ffn = (3 * f + 4 * e) * u * 4 + mask
    candidates = [ffn]
    if not flash_attn:
        scores = c * u * shape.n_head * 4
        candidates.append(scores + c * u * 4 + (3 * e + 2 * shape.n_embd_q + 2 * shape.n_embd_kv) * u * 4)
    if on_gpu:
        candidates.append((v + e) * u * 4)
        return max(candidates), 2 * e * u * 4 + c * u * 2
    candidates.append((v + 2 * e) * u * 4)
    return max(candidates), 0


@dataclass
class MemoryEstimate:
    """Predicted llama.cpp memory breakdown, in MiB (floats; llama.cpp prints them rounded down).

    ``host_model_mib`` is the weights mapped from the file (llama.cpp's "Host" row);
    ``extra_buffers_mib`` the weights the CPU backend repacked for this CPU (rows such as
    ``AMX`` or ``CPU_REPACK``; empty for a GPU or a CPU without such kernels).
    """

    gpu: str | None
    n_ctx: int
    quant: str
    kv_type: str
    gpu_model_mib: float
    host_model_mib: float
    context_mib: float
    compute_mib: float
    host_compute_mib: float
    overhead_mib: float
    total_gpu_mib: float
    gpu_memory_mib: float | None
    fits: bool
    extra_buffers_mib: dict[str, float] = field(default_factory=dict)

    @property
    def headroom_mib(self) -> float | None:
        return None if self.gpu_memory_mib is None else self.gpu_memory_mib - self.total_gpu_mib

    def to_dict(self) -> dict:
        return {**asdict(self), "headroom_mib": self.headroom_mib}


def memory_breakdown(shape: ModelShape, quant: str, n_ctx: int = 4096, gpu: str | None = "L4",
                     n_gpu_layers: int | None = None, kv_type: str = "f16", n_ubatch: int = 512,
                     flash_attn: bool = True, imatrix: bool = False, cpu: CpuFeatures = PLAIN_CPU,
                     tensor_order: list[str] | None = None, types: dict[str, str] | None = None) -> MemoryEstimate:
    """What llama.cpp will allocate for ``shape`` in ``quant`` at ``n_ctx``.

    ``gpu=None`` means CPU only. ``n_gpu_layers=None`` offloads everything (``-ngl all``);
    a smaller number keeps the first layers (and the output matrix) on the host, as
    llama.cpp does — the compute figures are then approximate. ``cpu`` decides which weights
    kept on the host are repacked into extra buffers (:mod:`helpers.cpu_buffers`; the default
    assumes none, ``CpuFeatures.detect()`` is this machine); ``tensor_order`` is the order of
    the tensors in the file (default: convert_hf_to_gguf's), which sets the mapped span.
    ``types`` gives every tensor's ggml type when they are known (an existing file's header),
    instead of llama-quantize's rules for ``quant``.
    """
    types = types or tensor_types(shape, quant, imatrix)
    dims = dict(shape.tensors())
    order = tensor_order or [name for name, _ in shape.tensors()]
    if gpu is None:
        on_gpu: set[str] = set()
        spec = None
        layers_on_gpu, output_on_gpu = 0, False
    else:
        spec = gpu_spec(gpu)
        ngl = shape.n_layer + 1 if n_gpu_layers is None else n_gpu_layers
        layers_on_gpu = min(ngl, shape.n_layer)
        output_on_gpu = ngl > shape.n_layer
        first_gpu_layer = shape.n_layer - layers_on_gpu
        on_gpu = {n for n in dims if (n.startswith("blk.") and int(n.split(".")[1]) >= first_gpu_layer)
                  or (n in ("output.weight", "output_norm.weight") and output_on_gpu)}
    gpu_bytes = sum(_pad(ggml_type(types[n]).tensor_bytes(dims[n])) for n in on_gpu)
    host = [(n, dims[n], types[n]) for n in order if n not in on_gpu]
    tied = [("output.weight", dims["token_embd.weight"], types["token_embd.weight"])] \
        if shape.tied and not output_on_gpu else []
    buffers = host_buffers(host, cpu, duplicated=tied)
    host_mapped = buffers.pop("CPU_Mapped")
    extra = {name: size / MIB for name, size in buffers.items()}
    if spec is None:
        dev, _ = compute_bytes(shape, n_ctx, n_ubatch, flash_attn, on_gpu=False)
        context = kv_cache_bytes(shape, n_ctx, kv_type)
        return MemoryEstimate(None, n_ctx, quant, kv_type, 0.0, host_mapped / MIB, context / MIB, dev / MIB,
                              0.0, 0.0, 0.0, None, True, extra)
    context = kv_cache_bytes(shape, n_ctx, kv_type, layers_on_gpu)
    dev, host_compute = compute_bytes(shape, n_ctx, n_ubatch, flash_attn, on_gpu=output_on_gpu)
    total_gpu = gpu_bytes + context + dev + spec.cuda_overhead_mib * MIB
    return MemoryEstimate(spec.name, n_ctx, quant, kv_type, gpu_bytes / MIB, host_mapped / MIB, context / MIB,
                          dev / MIB, host_compute / MIB, spec.cuda_overhead_mib, total_gpu / MIB, spec.memory_mib,
                          total_gpu <= spec.memory_mib * MIB, extra)


# --- GPUs, fitting and the speed limit ------------------------------------------------
@dataclass(frozen=True)
class GpuSpec:
    name: str  # Modal's gpu= string
    memory_mib: int  # what CUDA reports as total
    bandwidth_gb_s: float  # vendor datasheet, decimal GB/s
    usd_per_hour: float
    price_source: str
    cuda_overhead_mib: int = 400  # CUDA context + cuBLAS workspace, not in llama.cpp's buffers


_PRICE_VERIFIED = "modal.com/pricing per-second list price ×3600, as cross-checked 2026-05-07 (techbytes.app)"
_PRICE_LISTED = "modal.com/pricing per-second list price ×3600 (2025 listing, not re-verified here)"
#: Modal's single-GPU types. Memory: CUDA's total where measured (L4: the article's log;
#: H200: our own run), else the datasheet size. Overhead: llama.cpp's "unaccounted" column
#: (254 MiB on the L4, 597 MiB on the H200), rounded up for headroom.
GPUS: dict[str, GpuSpec] = {g.name: g for g in (
    GpuSpec("T4", 15360, 320, 0.5904, _PRICE_VERIFIED, 300),
    GpuSpec("L4", 22563, 300, 0.7992, _PRICE_VERIFIED, 300),
    GpuSpec("A10", 23028, 600, 1.1016, _PRICE_LISTED, 300),
    GpuSpec("L40S", 46068, 864, 1.9512, _PRICE_VERIFIED, 400),
    GpuSpec("A100-40GB", 40536, 1555, 2.0988, _PRICE_LISTED, 500),
    GpuSpec("A100-80GB", 81251, 2039, 2.4984, _PRICE_VERIFIED, 500),
    GpuSpec("H100", 81559, 3350, 3.9492, _PRICE_VERIFIED, 600),
    GpuSpec("H200", 143155, 4800, 4.5396, _PRICE_LISTED, 600),
    GpuSpec("B200", 182272, 8000, 6.2496, _PRICE_LISTED, 700),
)}


def gpu_spec(name: str) -> GpuSpec:
    key = name.strip().upper()
    for g in GPUS.values():
        if g.name.upper() == key:
            return g
    raise ValueError(f"unknown GPU {name!r}; Modal GPU types: {', '.join(GPUS)}")


def bytes_per_token(shape: ModelShape, quant: str, n_past: int = 0, kv_type: str = "f16") -> int:
    """Bytes read from memory to generate one token at batch size 1.

    Every weight matrix is read once per token — except the embedding table, of which only
    one row is looked up — plus the KV cache of the ``n_past`` tokens already in context.
    """
    sizes = tensor_data_bytes(shape, quant)
    row = sizes["token_embd.weight"] // shape.n_vocab
    weights = sum(sizes.values()) - sizes["token_embd.weight"] + row
    if shape.tied:
        weights += sizes["token_embd.weight"] - row  # the same matrix is read in full as output
    return weights + n_past * kv_bytes_per_token(shape, kv_type)


def decode_roofline(shape: ModelShape, quant: str, gpu: str, n_past: int = 0) -> float:
    """Upper limit on batch-1 decode speed (tokens/s): bandwidth / bytes per token."""
    return gpu_spec(gpu).bandwidth_gb_s * 1e9 / bytes_per_token(shape, quant, n_past)


def fits(shape: ModelShape, quant: str, gpu: str, n_ctx: int = 4096, headroom_mib: float = 0.0, **kw) -> bool:
    est = memory_breakdown(shape, quant, n_ctx, gpu, **kw)
    return est.total_gpu_mib + headroom_mib <= est.gpu_memory_mib


def max_context(shape: ModelShape, quant: str, gpu: str, headroom_mib: float = 0.0, **kw) -> int:
    """The largest context (multiple of 256, up to the training context) that fits."""
    limit = shape.n_ctx_train or 131072
    lo, hi = 0, limit // 256
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(shape, quant, gpu, mid * 256, headroom_mib, **kw):
            lo = mid
        else:
            hi = mid - 1
    return lo * 256


#: Fraction of the bandwidth roofline llama.cpp reaches at batch 1, where measured:
#: L4 — the article's Qwen3-8B Q5_K_M run, 41.47 tok/s against a 55.4 tok/s roofline;
#: H200 — our llama-bench tg128 with flash attention, 248.4 against 886 (see tests/data).
DECODE_EFFICIENCY = {"L4": 41.47 / 55.38, "H200": 248.4 / 886.0}


def decode_efficiency(gpu: str) -> float:
    """Measured fraction of the roofline, or — for GPUs we have not measured — a log-linear
    interpolation in bandwidth between the L4 (75%) and the H200 (28%).

    Faster memory leaves a larger share of each token to fixed per-kernel costs
    (docs/benchmarks.md), so the fraction falls as bandwidth rises.
    """
    import math

    spec = gpu_spec(gpu)
    if spec.name in DECODE_EFFICIENCY:
        return DECODE_EFFICIENCY[spec.name]
    (b1, e1), (b2, e2) = ((GPUS[g].bandwidth_gb_s, DECODE_EFFICIENCY[g]) for g in ("L4", "H200"))
    slope = math.log(e2 / e1) / math.log(b2 / b1)
    return e1 * (spec.bandwidth_gb_s / b1) ** slope


def expected_decode_tps(shape: ModelShape, quant: str, gpu: str) -> float:
    """Batch-1 decode speed to expect: roofline × :func:`decode_efficiency`."""
    return decode_roofline(shape, quant, gpu) * decode_efficiency(gpu)


#: Presets from most to least faithful; recommend() walks down this list.
QUALITY_ORDER = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "IQ4_XS", "Q3_K_L", "Q3_K_M",
                 "Q3_K_S", "Q2_K")


@dataclass
class Recommendation:
    quant: str
    estimate: MemoryEstimate
    max_context: int
    expected_tokens_per_s: float
    rejected: dict[str, str]  # preset -> why not

    def explain(self) -> str:
        e = self.estimate
        lines = [f"{self.quant} on the {e.gpu}: {e.total_gpu_mib:,.0f} of {e.gpu_memory_mib:,} MiB at "
                 f"{e.n_ctx:,} tokens of context (up to {self.max_context:,} fit), "
                 f"~{self.expected_tokens_per_s:.0f} tokens/s expected at batch 1."]
        lines += [f"  not {q}: {why}" for q, why in self.rejected.items()]
        return "\n".join(lines)


def recommend(shape: ModelShape, gpu: str, n_ctx: int = 4096, headroom_mib: float = 1024,
              min_tokens_per_s: float | None = None, candidates: tuple[str, ...] = QUALITY_ORDER,
              **kw) -> Recommendation:
    """The most faithful preset that fits ``gpu`` at ``n_ctx`` with ``headroom_mib`` to spare
    and, if ``min_tokens_per_s`` is given, is expected to decode at least that fast.

    Memory alone is not the whole answer: decoding reads every weight once per token, so a
    bigger file is a slower model. F16 Qwen3-8B fits an L4 but would crawl at ~14 tokens/s.
    """
    rejected: dict[str, str] = {}
    for q in candidates:
        if q not in PRESETS:
            raise ValueError(f"unknown quantization {q!r}; choose from {', '.join(PRESETS)}")
        est = memory_breakdown(shape, q, n_ctx, gpu, **kw)
        over = est.total_gpu_mib + headroom_mib - est.gpu_memory_mib
        speed = expected_decode_tps(shape, q, gpu)
        if over > 0:
            rejected[q] = f"needs {over:,.0f} MiB more than the {gpu} has (with {headroom_mib:,.0f} MiB headroom)"
        elif min_tokens_per_s is not None and speed < min_tokens_per_s:
            rejected[q] = f"fits, but ~{speed:.0f} tokens/s < {min_tokens_per_s:.0f} wanted"
        else:
            return Recommendation(q, est, max_context(shape, q, gpu, headroom_mib, **kw), speed, rejected)
    raise ValueError(f"no quantization of this model fits the {gpu} at {n_ctx:,} tokens"
                     + (f" at {min_tokens_per_s:.0f} tokens/s" if min_tokens_per_s else "")
                     + f". Choose a bigger GPU ({', '.join(_bigger_gpus(gpu))}), "
                     "a shorter context or a lower speed target.")


def _bigger_gpus(gpu: str) -> list[str]:
    have = gpu_spec(gpu).memory_mib
    return [g.name for g in GPUS.values() if g.memory_mib > have]


#: Bytes per parameter of the plain number formats the rule of thumb uses.
RULE_OF_THUMB_BYTES = {"FP32": 4.0, "FP16": 2.0, "INT8": 1.0, "INT4": 0.5}


def rule_of_thumb(shape: ModelShape) -> dict[str, float]:
    """Weights-only memory in GB (decimal) for each plain format: parameters × bytes."""
    n = shape.parameter_count()
    return {fmt: n * b / 1e9 for fmt, b in RULE_OF_THUMB_BYTES.items()}


def fit_table(shape: ModelShape, quants: list[str], gpus: list[str] | None = None, n_ctx: int = 4096,
              **kw) -> list[dict]:
    """For each GPU and preset: the predicted GPU total (MiB) and whether it fits."""
    rows = []
    for g in gpus or list(GPUS):
        for q in quants:
            est = memory_breakdown(shape, q, n_ctx, g, **kw)
            rows.append({"gpu": g, "quant": q, "total_gpu_mib": round(est.total_gpu_mib), "fits": est.fits})
    return rows


def gpu_cost_usd(gpu: str, seconds: float) -> float:
    """What ``seconds`` of one GPU cost at Modal's list price (CPU and memory are extra, and small)."""
    return gpu_spec(gpu).usd_per_hour * seconds / 3600
