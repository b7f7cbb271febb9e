"""Several models on one GPU, or one GPU per model: the memory sums that decide.

Two ways to serve more than one model:

* **one GPU, several models** — llama-server's router mode (``python -m helpers serve --router``,
  the Modal server with ``LLAMACPP_COURSE_ROUTER=1``). The router itself never touches the GPU;
  each loaded model is its own llama-server process with **everything of its own**: its
  weights, its KV cache, its compute buffer and its own CUDA context (CUDA and cuBLAS take a
  few hundred MiB per process, :attr:`helpers.gpus.Gpu.cuda_overhead_mib`). Nothing is shared,
  so the memory needed is the *sum* of :func:`helpers.memory.memory_breakdown` totals, and what
  is left is the card's memory minus that sum;
* **one container per model** — a deployment per model, each on its own (possibly smaller,
  cheaper) GPU. Each must fit alone; each scales, and bills, on its own.

One GPU is cheaper while every model is busy; separate containers win when traffic is uneven
(an idle model's container scales to zero, a router's GPU bills as long as any model is used)
and when the models don't fit together. :func:`share_gpu` does the sum,
:func:`fitting_sets` lists which models fit together, :func:`safe_models_max` gives the router's
``--models-max`` that can never run out of memory, and :func:`compare` puts the two ways side by
side with their hourly prices.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from helpers.gpus import gpu_spec
from helpers.memory import MemoryEstimate, memory_breakdown
from helpers.model_shape import ModelShape
from helpers.server_config import CTX_PER_SLOT, PARALLEL

#: The KV cache each served model gets with the course's settings: 8 slots x 8,192 tokens (the router
#: gives every model the single server's settings).
COURSE_N_CTX = PARALLEL * CTX_PER_SLOT


@dataclass(frozen=True)
class ModelInstance:
    """One model as one llama-server would serve it: which model, which quantization, how much context.

    ``model`` is a built-in config (``Qwen3-8B``, ``Llama-3.1-8B``…), anything
    :func:`helpers.models.resolve_shape` accepts (only a file's header is read), or a
    :class:`ModelShape`. For a GGUF file, the sizes come from the types its tensors actually
    have, and ``quant`` only labels it. ``n_ctx`` is the server's whole KV cache — slots x
    context per slot (``--ctx-size``); the default is the course server's.
    """

    model: str | ModelShape
    quant: str
    n_ctx: int = COURSE_N_CTX
    kv_type: str = "f16"
    flash_attn: bool = True

    @property
    def label(self) -> str:
        if isinstance(self.model, ModelShape):
            name = self.model.name
        else:
            name = str(self.model)
            name = Path(name).name if name.endswith(".gguf") or os.sep in name else name
        return f"{name} {self.quant}"

    @cached_property
    def _source(self) -> tuple[ModelShape, list[str] | None, dict[str, str] | None]:
        """The shape; for a file, also its tensors' order and their actual types (then ``quant`` is only a label)."""
        if isinstance(self.model, ModelShape):
            return self.model, None, None
        from helpers.models import resolve_shape

        source = resolve_shape(self.model)
        if source.header is None:
            return source.shape, None, None
        tensors = source.header.tensors
        types = {t.name: t.type.name for t in tensors}
        if not set(types) >= {name for name, _ in source.shape.tensors()}:
            types = None  # the first part of a split file: the other parts' types follow the quant's rules
        return source.shape, [t.name for t in tensors], types

    def estimate(self, gpu: str) -> MemoryEstimate:
        """What this one server allocates on ``gpu`` (:func:`helpers.memory.memory_breakdown`)."""
        shape, order, types = self._source
        return memory_breakdown(shape, self.quant, self.n_ctx, gpu, kv_type=self.kv_type, flash_attn=self.flash_attn,
                                tensor_order=order, types=types)


@dataclass(frozen=True)
class SharedGpu:
    """Several servers on one GPU: each one's breakdown, their sum and what is left.

    ``free_mib`` is the card's memory minus the sum (negative when they do not fit);
    ``fits`` also keeps ``headroom_mib`` free.
    """

    gpu: str
    gpu_memory_mib: float
    estimates: tuple[tuple[ModelInstance, MemoryEstimate], ...]
    headroom_mib: float = 0.0

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(instance.label for instance, _ in self.estimates)

    @property
    def total_mib(self) -> float:
        return sum(est.total_gpu_mib for _, est in self.estimates)

    @property
    def cuda_overhead_mib(self) -> float:
        """The part of the total that is only there because every model has its own process."""
        return sum(est.overhead_mib for _, est in self.estimates)

    @property
    def free_mib(self) -> float:
        return self.gpu_memory_mib - self.total_mib

    @property
    def fits(self) -> bool:
        return self.free_mib >= self.headroom_mib

    def rows(self) -> list[dict]:
        """One row per model (MiB, rounded), for a table."""
        return [{"model": inst.label, "n_ctx": est.n_ctx, "weights_mib": round(est.gpu_model_mib),
                 "kv_cache_mib": round(est.context_mib), "compute_mib": round(est.compute_mib),
                 "cuda_mib": round(est.overhead_mib), "total_mib": round(est.total_gpu_mib)}
                for inst, est in self.estimates]

    def summary(self) -> str:
        """One line: the sum, the card, what is left."""
        parts = " + ".join(f"{inst.label} {est.total_gpu_mib:,.0f}" for inst, est in self.estimates)
        if len(self.estimates) > 1:
            parts += f" = {self.total_mib:,.0f}"
        verdict = "fits" if self.fits else "does not fit"
        left = f"{self.free_mib:,.0f} MiB free" if self.free_mib >= 0 else f"{-self.free_mib:,.0f} MiB short"
        return (f"{self.gpu}: {parts} of {self.gpu_memory_mib:,.0f} MiB; {left}"
                + (f" (keeping {self.headroom_mib:,.0f} MiB spare)" if self.headroom_mib else "") + f": {verdict}")


def _check_instances(instances: Sequence[ModelInstance]) -> None:
    if not instances:
        raise ValueError("no models given: pass at least one ModelInstance(model, quant)")
    bad = [i for i in instances if not isinstance(i, ModelInstance)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a ModelInstance; write ModelInstance('Qwen3-8B', 'Q5_K_M')")


def share_gpu(instances: Sequence[ModelInstance], gpu: str, headroom_mib: float = 0.0) -> SharedGpu:
    """All ``instances`` loaded at once on one ``gpu``: the sum of their totals, and what is left."""
    _check_instances(instances)
    spec = gpu_spec(gpu)
    return SharedGpu(spec.name, spec.memory_mib, tuple((i, i.estimate(gpu)) for i in instances), headroom_mib)


def fitting_sets(instances: Sequence[ModelInstance], gpu: str, headroom_mib: float = 0.0,
                 maximal: bool = True) -> list[SharedGpu]:
    """The sets of ``instances`` that fit ``gpu`` together, largest first.

    ``maximal=True`` keeps only the sets to which no other model can be added (every subset of
    a set that fits fits too); ``False`` lists every set that fits.
    """
    _check_instances(instances)
    spec = gpu_spec(gpu)
    estimates = [(i, i.estimate(gpu)) for i in instances]
    found: list[tuple[frozenset[int], SharedGpu]] = []
    for size in range(len(estimates), 0, -1):
        for combo in itertools.combinations(range(len(estimates)), size):
            shared = SharedGpu(spec.name, spec.memory_mib, tuple(estimates[k] for k in combo), headroom_mib)
            if not shared.fits:
                continue
            members = frozenset(combo)
            if maximal and any(members < bigger for bigger, _ in found):
                continue
            found.append((members, shared))
    return [shared for _, shared in found]


def safe_models_max(instances: Sequence[ModelInstance], gpu: str, headroom_mib: float = 0.0) -> int:
    """The largest ``--models-max`` for a router over ``instances`` that can never run out of GPU memory.

    The router loads whichever models are asked for, up to ``--models-max`` of them, so the
    limit is safe only if *any* that many fit together — that is, if the largest ones do.
    A model that does not fit alone is an error: no limit makes it loadable.
    """
    _check_instances(instances)
    spec = gpu_spec(gpu)
    estimates = sorted(((i, i.estimate(gpu)) for i in instances), key=lambda pair: -pair[1].total_gpu_mib)
    k = 0
    while k < len(estimates) and SharedGpu(spec.name, spec.memory_mib, tuple(estimates[:k + 1]), headroom_mib).fits:
        k += 1
    if k == 0:
        inst, est = estimates[0]
        raise ValueError(f"{inst.label} alone needs {est.total_gpu_mib:,.0f} MiB at {est.n_ctx:,} tokens, more than "
                         f"the {spec.name}'s {spec.memory_mib:,} MiB (less {headroom_mib:,.0f} spare); give it a "
                         "shorter context, a smaller quantization or a bigger GPU")
    return k


def cap_models_max(instances: Sequence[ModelInstance], gpu: str, wanted: int, headroom_mib: float = 0.0
                   ) -> tuple[int, str]:
    """``wanted`` as a router's ``--models-max`` (0: no limit), lowered to :func:`safe_models_max`; and why.

    Returns the limit to use and one line for the log. A model too big for the card alone is
    reported, and the limit is left as it is: that model fails to load, the others still serve.
    """
    if wanted < 0:
        raise ValueError(f"models-max is {wanted}; give a whole number >= 0 (0 = no limit)")
    wanted_text = "no limit" if wanted == 0 else str(wanted)
    try:
        safe = safe_models_max(instances, gpu, headroom_mib)
    except ValueError as exc:
        return wanted, f"models-max {wanted_text}: {exc}"
    if wanted == 0 or wanted > safe:
        largest = sorted((i.estimate(gpu) for i in instances), key=lambda e: -e.total_gpu_mib)[:safe + 1]
        if safe == len(instances):
            return safe, f"models-max {wanted_text} -> {safe}: all {safe} models fit the {gpu_spec(gpu).name} together"
        need = sum(e.total_gpu_mib for e in largest)
        return safe, (f"models-max {wanted_text} -> {safe}: the {safe + 1} largest models would need {need:,.0f} MiB, "
                      f"the {gpu_spec(gpu).name} has {gpu_spec(gpu).memory_mib:,}")
    return wanted, f"models-max {wanted}: any {wanted} of these models fit the {gpu_spec(gpu).name} together"


@dataclass(frozen=True)
class Comparison:
    """One GPU for every model against one container (and GPU) per model."""

    shared: SharedGpu
    separate: tuple[SharedGpu, ...]

    @property
    def separate_fit(self) -> bool:
        return all(s.fits for s in self.separate)

    @property
    def shared_usd_per_hour(self) -> float | None:
        return gpu_spec(self.shared.gpu).usd_per_hour

    @property
    def separate_usd_per_hour(self) -> float | None:
        prices = [gpu_spec(s.gpu).usd_per_hour for s in self.separate]
        return None if None in prices else sum(prices)

    def summary(self) -> str:
        def price(usd: float | None) -> str:
            return "no list price" if usd is None else f"${usd:.2f}/hour"

        lines = [f"one GPU for all {len(self.separate)} models, {price(self.shared_usd_per_hour)} while any of them "
                 "is in use:", f"  {self.shared.summary()}",
                 f"one container per model, {len(self.separate)} GPUs, {price(self.separate_usd_per_hour)} while all "
                 "are in use (each scales to zero on its own):"]
        lines += [f"  {s.summary()}" for s in self.separate]
        return "\n".join(lines)


def compare(instances: Sequence[ModelInstance], gpu: str, per_model_gpu: str | None = None,
            headroom_mib: float = 0.0) -> Comparison:
    """``instances`` together on one ``gpu``, against each on its own ``per_model_gpu`` (default: the same type)."""
    _check_instances(instances)
    alone = per_model_gpu or gpu
    return Comparison(share_gpu(instances, gpu, headroom_mib),
                      tuple(share_gpu([i], alone, headroom_mib) for i in instances))
