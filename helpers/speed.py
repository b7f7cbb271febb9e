"""How fast a GPU can generate, and what a token costs.

Generating one token at batch size 1 reads every weight once, so memory bandwidth sets a hard
limit — the *roofline*: bandwidth ÷ bytes read per token. Real kernels reach a fraction of
it, and the fraction is measured (the article's L4 run, our H200 runs). Dividing a GPU's
price per second by the tokens it generates per second gives the cost per token.
"""

from __future__ import annotations

import math

from helpers.gpus import GPUS, gpu_cost_usd, gpu_spec
from helpers.memory import kv_bytes_per_token
from helpers.model_shape import ModelShape
from helpers.sizes import tensor_data_bytes


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
    spec = gpu_spec(gpu)
    if spec.name in DECODE_EFFICIENCY:
        return DECODE_EFFICIENCY[spec.name]
    (b1, e1), (b2, e2) = ((GPUS[g].bandwidth_gb_s, DECODE_EFFICIENCY[g]) for g in ("L4", "H200"))
    slope = math.log(e2 / e1) / math.log(b2 / b1)
    return e1 * (spec.bandwidth_gb_s / b1) ** slope


def expected_decode_tps(shape: ModelShape, quant: str, gpu: str) -> float:
    """Batch-1 decode speed to expect: roofline × :func:`decode_efficiency`."""
    return decode_roofline(shape, quant, gpu) * decode_efficiency(gpu)


def decode_time_model(bytes_a: float, tps_a: float, bytes_b: float, tps_b: float) -> dict[str, float]:
    """Fit per-token time = fixed + bytes / bandwidth through two llama-bench measurements.

    Two models with the *same* graph (same layers, same kernels) but different widths share
    the fixed part (kernel launches, small ops, synchronisation); the difference in time per
    token is then due to the bytes alone.
    """
    t_a, t_b = 1 / tps_a, 1 / tps_b
    bandwidth = (bytes_a - bytes_b) / (t_a - t_b)
    fixed = t_a - bytes_a / bandwidth
    return {"fixed_ms": fixed * 1e3, "effective_bandwidth_gb_s": bandwidth / 1e9}


def cost_per_million_tokens(gpu: str, tokens_per_s: float) -> float:
    """Dollars per million generated tokens if the GPU is kept busy at ``tokens_per_s``."""
    return gpu_cost_usd(gpu, 1e6 / tokens_per_s)
