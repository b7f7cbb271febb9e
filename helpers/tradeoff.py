"""Choosing a quantization: quality against speed, within the GPU's memory.

Memory is a hard limit: the file, the KV cache and the compute buffer must fit
(:mod:`helpers.memory`). Within it, a smaller preset is a faster model — decoding reads every
weight once per token (:mod:`helpers.speed`) — and a less faithful one (:mod:`helpers.quality`).
:func:`choose_quant` weighs the two at a price the learner sets.
"""

from __future__ import annotations

from dataclasses import dataclass

from helpers.gpus import GPUS, gpu_spec
from helpers.memory import memory_breakdown
from helpers.model_shape import ModelShape
from helpers.speed import expected_decode_tps


def _bigger_gpus(gpu: str) -> list[str]:
    have = gpu_spec(gpu).memory_mib
    return [g.name for g in GPUS.values() if g.memory_mib > have]


# --- quality against speed --------------------------------------------------------------
#: The presets a choice walks through, most to least faithful: each step down is smaller and
#: faster and loses more quality (the "M" mixes are the Hub's usual offer at each bit width).
LADDER = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
#: The default price of quality: a step down the ladder is worth taking if it makes decoding at
#: least 15% faster per 0.01 nats/token of KL divergence it adds (see :func:`choose_quant`).
SPEEDUP_PCT_PER_KLD = 15.0


@dataclass
class LadderStep:
    """One preset on a GPU: its speed, its measured quality loss, whether it fits, and what
    stepping down to it from the preset above buys (percent faster) and costs (KLD added)."""

    preset: str
    tokens_per_s: float
    kld: float
    total_gpu_mib: float
    fits: bool
    speedup_pct: float | None = None
    kld_added: float | None = None

    @property
    def speedup_per_kld(self) -> float | None:
        """Percent faster per 0.01 nats/token of KL divergence added: the step's exchange rate."""
        if self.speedup_pct is None or not self.kld_added:
            return None
        return self.speedup_pct / (self.kld_added / 0.01)


@dataclass
class Choice:
    preset: str
    gpu: str
    n_ctx: int
    speedup_per_kld: float
    steps: list[LadderStep]

    def table(self) -> str:
        """The ladder as plain text, one row per preset, the chosen one marked."""
        lines = [f"{'preset':8s}{'tokens/s':>9s}{'KLD':>9s}{'GPU MiB':>9s}{'fits':>6s}"
                 f"{'step: faster':>14s}{'KLD added':>11s}{'% per 0.01':>12s}"]
        for s in self.steps:
            step = ("" if s.speedup_pct is None else
                    f"{s.speedup_pct:+13.1f}%{s.kld_added:+11.4f}{s.speedup_per_kld:12.1f}")
            mark = "  <- chosen" if s.preset == self.preset else ""
            lines.append(f"{s.preset:8s}{s.tokens_per_s:9.1f}{s.kld:9.4f}{s.total_gpu_mib:9,.0f}"
                         f"{'yes' if s.fits else 'NO':>6s}{step}{mark}")
        return "\n".join(lines)


def choose_quant(shape: ModelShape, gpu: str, n_ctx: int = 4096, headroom_mib: float = 1024,
                 speedup_per_kld: float = SPEEDUP_PCT_PER_KLD, ladder: tuple[str, ...] = LADDER) -> Choice:
    """Walk down the ladder from FP16 while a step is worth its price, or while the file does not fit.

    A step is worth it when its speed-up, in percent, divided by the KL divergence it adds (in
    units of 0.01 nats/token, :mod:`helpers.quality`) is at least ``speedup_per_kld`` — the
    price you put on quality. Memory is a hard limit: a preset must fit ``gpu`` at ``n_ctx``
    with ``headroom_mib`` to spare.

    Speeds are :func:`helpers.speed.expected_decode_tps`, but only their *ratios* matter, and
    on one GPU those are ratios of bytes read per token: the choice does not depend on how
    close to the roofline a GPU gets, nor on any one measured run.
    """
    from helpers.quality import LLAMA3_8B

    if speedup_per_kld < 0:
        raise ValueError(f"speedup_per_kld must be 0 or more (percent faster per 0.01 KLD), got {speedup_per_kld}")
    unknown = [q for q in ladder if q not in LLAMA3_8B]
    if unknown:
        raise ValueError(f"no published quality figures for {', '.join(unknown)}; choose from {', '.join(LLAMA3_8B)}")
    steps: list[LadderStep] = []
    for q in ladder:
        est = memory_breakdown(shape, q, n_ctx, gpu)
        step = LadderStep(q, expected_decode_tps(shape, q, gpu), LLAMA3_8B[q].kld, est.total_gpu_mib,
                          est.total_gpu_mib + headroom_mib <= est.gpu_memory_mib)
        if steps:
            step.speedup_pct = (step.tokens_per_s / steps[-1].tokens_per_s - 1) * 100
            step.kld_added = step.kld - steps[-1].kld
        steps.append(step)
    chosen = 0
    while chosen + 1 < len(steps):
        nxt = steps[chosen + 1]
        if steps[chosen].fits and (nxt.speedup_per_kld or 0) < speedup_per_kld:
            break
        chosen += 1
    if not steps[chosen].fits:
        raise ValueError(f"no preset of the ladder fits the {gpu} at {n_ctx:,} tokens with {headroom_mib:,.0f} MiB "
                         f"to spare; choose a bigger GPU ({', '.join(_bigger_gpus(gpu))}) or a shorter context")
    return Choice(steps[chosen].preset, gpu_spec(gpu).name, n_ctx, speedup_per_kld, steps)
