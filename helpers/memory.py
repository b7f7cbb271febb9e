"""What llama.cpp allocates at run time: the weights, the KV cache and the compute buffers.

Every number is derived the way llama.cpp derives it, so it can be checked against the
memory breakdown llama.cpp prints (tests/test_memory.py):

* **model** memory = the tensor bytes (:mod:`helpers.sizes`), split between the GPU (all
  layers and the output matrix) and the host (``token_embd`` — llama.cpp only ever looks up
  rows of it);
* **context** = the KV cache: n_ctx (rounded up to 256) × layers × 2 (K and V) × KV width ×
  bytes per element of the cache type;
* **compute** = the largest set of intermediate tensors alive at once in one forward pass of
  n_ubatch tokens. For dense models it is either the feed-forward block of a layer
  (3·n_ff + 4·n_embd floats per token, plus the attention mask) or the output layer (the
  logits, n_vocab floats per token); without flash attention the attention scores
  (n_ctx × n_head floats per token) usually win. These formulas reproduce the buffers that
  ``sched_reserve`` prints at our pinned commit.

Sizes are in bytes internally and MiB (2**20) where shown, like llama.cpp's breakdown.

Settings mean what they mean to llama.cpp: ``n_ctx=0`` is the model's trained context
(``n_ctx_train``), ``n_gpu_layers=0`` keeps every layer on the host, and a quantized V cache
needs flash attention. Settings llama.cpp would refuse raise a one-line ``ValueError``
(:func:`check_settings`) instead of producing a number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from numbers import Integral

from helpers.cpu_buffers import PLAIN_CPU, CpuFeatures, host_buffers
from helpers.ggml_types import ggml_type
from helpers.gpus import GPUS, gpu_spec
from helpers.model_shape import ModelShape
from helpers.quant import preset, tensor_types
from helpers.sizes import MIB, pad

#: The KV cache types llama.cpp accepts (``--cache-type-k/-v``, common/arg.cpp).
KV_TYPES = ("f16", "bf16", "f32", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl")
#: The unquantized ones: the only V cache types llama.cpp allows without flash attention.
PLAIN_KV_TYPES = ("f16", "bf16", "f32")


def _whole(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_settings(quant: str | None = None, n_ctx: int = 4096, gpu: str | None = None,
                   n_gpu_layers: int | None = None, kv_type: str = "f16", n_ubatch: int = 512,
                   flash_attn: bool = True) -> None:
    """Raise a one-line ``ValueError`` for a setting llama.cpp would refuse (or a name it doesn't know).

    :func:`memory_breakdown` calls it first; the command line calls it before it reads a model,
    so a typo fails before anything is downloaded. ``quant=None`` skips the preset check.
    """
    if quant is not None:
        preset(quant)
    if not _whole(n_ctx) or n_ctx < 0:
        raise ValueError(f"n_ctx (--ctx) is {n_ctx!r}; give a whole number >= 0 (0 = the model's trained context)")
    if not _whole(n_ubatch) or n_ubatch < 1:
        raise ValueError(f"n_ubatch (--ubatch) is {n_ubatch!r}; give a whole number >= 1 (llama.cpp's default: 512)")
    if n_gpu_layers is not None and (not _whole(n_gpu_layers) or n_gpu_layers < 0):
        raise ValueError(f"n_gpu_layers (--ngl) is {n_gpu_layers!r}; give a whole number >= 0 (0 = CPU only), "
                         "or leave it unset for all layers")
    _kv_type(kv_type)
    if not flash_attn and kv_type.lower() not in PLAIN_KV_TYPES:
        raise ValueError(f"a quantized V cache ({kv_type}) needs flash attention: llama.cpp refuses it otherwise "
                         "(\"quantized V cache requires flash_attn to be enabled\"); enable flash attention or use "
                         f"an {'/'.join(PLAIN_KV_TYPES)} cache")
    if gpu is not None:
        gpu_spec(gpu)


def trained_ctx(shape: ModelShape, n_ctx: int) -> int:
    """``n_ctx``, or the model's trained context when it is 0 (as llama.cpp reads ``--ctx-size 0``)."""
    if n_ctx:
        return n_ctx
    if not shape.n_ctx_train:
        raise ValueError(f"n_ctx=0 means the model's trained context, which {shape.name or 'this shape'} does not "
                         "record; give the context length explicitly (--ctx)")
    return shape.n_ctx_train


def padded_ctx(n_ctx: int) -> int:
    """llama.cpp rounds the context up to a multiple of 256 (llama-context.cpp)."""
    return pad(n_ctx, 256)


def _kv_type(kv_type: str):  # noqa: ANN202
    if not isinstance(kv_type, str) or kv_type.lower() not in KV_TYPES:
        raise ValueError(f"unknown KV cache type {kv_type!r}; choose one of {', '.join(KV_TYPES)}")
    return ggml_type(kv_type)


def kv_bytes_per_token(shape: ModelShape, kv_type: str = "f16") -> int:
    return 2 * shape.n_layer * _kv_type(kv_type).row_bytes(shape.n_embd_kv)


def kv_cache_bytes(shape: ModelShape, n_ctx: int, kv_type: str = "f16", n_layers: int | None = None) -> int:
    """K and V for every position of the (padded) context, for ``n_layers`` layers (default all)."""
    if not _whole(n_ctx) or n_ctx < 0:
        raise ValueError(f"n_ctx is {n_ctx!r}; give a whole number >= 0")
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

    ``n_ctx=0`` means the model's trained context, as in llama.cpp (the estimate's ``n_ctx``
    says which). ``gpu=None`` means CPU only. ``n_gpu_layers=None`` offloads everything (``-ngl all``);
    a smaller number keeps the first layers (and the output matrix) on the host, as
    llama.cpp does — the compute figures are then approximate. ``cpu`` decides which weights
    kept on the host are repacked into extra buffers (:mod:`helpers.cpu_buffers`; the default
    assumes none, ``CpuFeatures.detect()`` is this machine); ``tensor_order`` is the order of
    the tensors in the file (default: convert_hf_to_gguf's), which sets the mapped span.
    ``types`` gives every tensor's ggml type when they are known (an existing file's header),
    instead of llama-quantize's rules for ``quant``.
    """
    check_settings(None if types else quant, n_ctx, gpu, n_gpu_layers, kv_type, n_ubatch, flash_attn)
    n_ctx = trained_ctx(shape, n_ctx)
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
    gpu_bytes = sum(pad(ggml_type(types[n]).tensor_bytes(dims[n])) for n in on_gpu)
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


def fit_table(shape: ModelShape, quants: list[str], gpus: list[str] | None = None, n_ctx: int = 4096,
              **kw) -> list[dict]:
    """For each GPU and preset: the predicted GPU total (MiB) and whether it fits."""
    rows = []
    for g in gpus or list(GPUS):
        for q in quants:
            est = memory_breakdown(shape, q, n_ctx, g, **kw)
            rows.append({"gpu": g, "quant": q, "total_gpu_mib": round(est.total_gpu_mib), "fits": est.fits})
    return rows
