"""Choosing a quantization: quality against speed, within the GPU's memory.

Memory is a hard limit: the file, the KV cache and the compute buffer must fit
(:mod:`helpers.memory`). Within it, a smaller preset reads fewer bytes per token — usually a
faster model (:mod:`helpers.speed`, measured or predicted, and labeled so) — and a less faithful
one (:mod:`helpers.quality`). :func:`choose_quant` weighs the two at a price the learner sets:
the course's own knob, not a law — a coding assistant may value quality far more than a chat bot.
"""

from __future__ import annotations

from dataclasses import dataclass

from helpers.gpus import GPUS, gpu_spec
from helpers.memory import memory_breakdown
from helpers.model_shape import ModelShape
from helpers.speed import expected_decode_tps, measured_tps, significant


def _bigger_gpus(gpu: str) -> list[str]:
    have = gpu_spec(gpu).memory_mib
    return [g.name for g in GPUS.values() if g.memory_mib > have]


# --- quality against speed --------------------------------------------------------------
#: The presets a choice walks through, most to least faithful: each step down is smaller and
#: faster and loses more quality (the "M" mixes are the Hub's usual offer at each bit width).
LADDER = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
#: The same ladder where llama.cpp published an importance-matrix variant (below 5 bits): same bytes and
#: speed, less divergence (:data:`helpers.quality.LLAMA3_8B_IMATRIX`).
LADDER_IMATRIX = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M+imatrix", "Q3_K_M+imatrix", "Q2_K+imatrix")
#: The default price of quality: a step down the ladder is worth taking if it makes decoding at
#: least 15% faster per 0.01 nats/token of KL divergence it adds (see :func:`choose_quant`). The
#: course's own setting for a chat model — a knob to turn, not a law.
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
    measured: bool = False  # the speed was measured on this GPU (else predicted: helpers.speed.speed_label)
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
        width = max(8, *(len(s.preset) + 1 for s in self.steps))
        lines = [f"{'preset':{width}s}{'tokens/s':>9s}{'speed':>10s}{'KLD':>8s}{'GPU MiB':>9s}{'fits':>6s}"
                 f"{'step: faster':>14s}{'KLD added':>11s}{'% per 0.01':>12s}"]
        for i, s in enumerate(self.steps):
            # measured speeds as recorded; predictions, and steps that involve one, to 2 significant figures
            tps = f"{s.tokens_per_s:g}" if s.measured else significant(s.tokens_per_s)
            step = ""
            if s.speedup_pct is not None:
                digits = 3 if s.measured and self.steps[i - 1].measured else 2
                faster = significant(s.speedup_pct, digits)
                faster = f"{'+' if s.speedup_pct > 0 else ''}{faster}%"
                step = (f"{faster:>14s}{s.kld_added:+11.4f}"
                        f"{significant(s.speedup_per_kld, digits):>12s}")
            mark = "  <- chosen" if s.preset == self.preset else ""
            lines.append(f"{s.preset:{width}s}{tps:>9s}{'measured' if s.measured else 'predicted':>10s}"
                         f"{s.kld:8.4f}{s.total_gpu_mib:9,.0f}{'yes' if s.fits else 'NO':>6s}{step}{mark}")
        return "\n".join(lines)


def choose_quant(shape: ModelShape, gpu: str, n_ctx: int = 4096, headroom_mib: float = 1024,
                 speedup_per_kld: float = SPEEDUP_PCT_PER_KLD, ladder: tuple[str, ...] = LADDER) -> Choice:
    """Walk down the ladder from FP16 while a step is worth its price, or while the file does not fit.

    A step is worth it when its speed-up, in percent, divided by the KL divergence it adds (in
    units of 0.01 nats/token, :mod:`helpers.quality`) is at least ``speedup_per_kld`` — the
    price you put on quality. Memory is a hard limit: a preset must fit ``gpu`` at ``n_ctx``
    with ``headroom_mib`` to spare.

    Speeds are the recorded measurement where the course has one (:func:`helpers.speed.measured_tps`,
    at the context it was measured at) and :func:`helpers.speed.expected_decode_tps` otherwise (each
    step says which). Only their *ratios* matter, and
    those are *not* ratios of bytes on every GPU: on an H200, Q8_0 runs at 0.98x Q5_K_M's speed
    with 1.5x its bytes, so the same price that picks Q5_K_M on an L4 keeps Q8_0 there.
    A ladder may hold importance-matrix variants (``"Q4_K_M+imatrix"``, :data:`LADDER_IMATRIX`):
    the same bytes and speed as the plain preset, a smaller KLD.
    """
    from helpers.quality import base_preset, lookup

    if speedup_per_kld < 0:
        raise ValueError(f"speedup_per_kld must be 0 or more (percent faster per 0.01 KLD), got {speedup_per_kld}")
    for q in ladder:
        lookup(q)  # a one-line error naming what exists
    steps: list[LadderStep] = []
    for q in ladder:
        base = base_preset(q)
        est = memory_breakdown(shape, base, n_ctx, gpu)
        measured = measured_tps(gpu, base, shape)
        tps = expected_decode_tps(shape, base, gpu) if measured is None else measured
        step = LadderStep(q, tps, lookup(q).kld, est.total_gpu_mib,
                          est.total_gpu_mib + headroom_mib <= est.gpu_memory_mib, measured is not None)
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
