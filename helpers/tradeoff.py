"""Choosing a quantization: the most faithful preset that fits a GPU at a context, fast enough.

Memory alone is not the whole answer: decoding reads every weight once per token, so a
bigger file is a slower model.
"""

from __future__ import annotations

from dataclasses import dataclass

from helpers.gpus import GPUS, gpu_spec
from helpers.memory import MemoryEstimate, max_context, memory_breakdown
from helpers.model_shape import ModelShape
from helpers.quant import PRESETS
from helpers.speed import expected_decode_tps

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
