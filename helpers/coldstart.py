"""Cold starts of a llama-server: one budget from sizes, bandwidths and measurements, and a stopwatch.

A *cold start* is everything between "a request arrives and no container is running" and
"the request gets its first token". :func:`model_cold_start_budget` is the course's one figure for
it — ``budget.total_s`` with a ``low_s``–``high_s`` range, for Qwen3-8B Q5_K_M on the L4 — and
every notebook and the cost model (:mod:`helpers.traffic`) use it. It has eight stages, each a
size divided by a bandwidth, a measured time, or a documented fixed cost, each with its source:

1. **GPU placement + container start** — Modal's documented ~1 s, more while no GPU is free;
2. **the image's files** the start reads (Python, llama-server, CUDA's libraries) — fetched lazily
   by Modal's file system;
3. **CUDA initialisation** — measured on the course's H200 (llama-server's log, and CUDA alone);
4. **the GGUF header and vocabulary** — measured there too;
5. **reading the GGUF file from the Volume** — file size ÷ the Volume's read bandwidth, calibrated on
   the article's one measured load on the L4 (``load time = 8146.38 ms``), with Modal's documented
   "one to two GB/s" as the fast end;
6. **copying the weights into GPU memory** — file size ÷ the host-to-device bandwidth: the H200's
   measured pageable copies, which the host's CPU limits, not the link (the H200 host's CPU is assumed);
7. **the KV cache and the warm-up** — llama-server's one decode step before it says it is ready;
8. **the client's retry** — the first token arrives at the retry that follows readiness, not at
   readiness itself (:func:`retry_delay_s`).

:func:`article_check` sets it beside the article's figures: its measured load time (llama.cpp's
``load time``, which covers stages 4–7) and its ≈20 s to the first token after a scale-to-zero, ~12 s
warm. The load alone took 8.1 s, so the cold start was at least ~9.7 s and the cold request's thinking
at most ~10 s: the "20 − 12 = 8 s" split is rough.

The second half measures the same thing where you can watch it: :func:`measure_ready` starts a
real llama-server (:class:`helpers.runtime.LocalServer`) and times process start → ready,
with the file's pages evicted from the operating system's page cache ("cold", as on a fresh
container) or read in beforehand ("warm"), and with llama.cpp's two ways of loading: ``mmap``
(its default, the pages of the file are mapped into the process) and ``none`` (read into the
process's own memory; older llama.cpp releases called this ``--no-mmap``).

Why the stopwatch reads llama-server's own log: :class:`~helpers.runtime.LocalServer` polls
``/health`` with a pause that doubles up to 2 s, so its ``ready_s`` can be late by up to the
last pause. llama-server started with ``--log-timestamps`` stamps every log line with the
microseconds since the process started, and it logs ``model loaded`` at the instant
``/health`` turns from 503 to 200 — so the log is the precise clock, and it also splits the
start into phases (reading tensors, creating the context, warm-up).

    python -m helpers.coldstart            # the budget for Qwen3-8B Q5_K_M on an L4, with its sources
    python -m helpers.coldstart --measure  # the local table (a 1.2 GB synthetic Qwen3 and SmolLM2)
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import mmap
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from helpers.commands import LOAD_MODES
from helpers.config import BENCHMARKS_DIR

# --- the budget ---------------------------------------------------------------------------

GB = 1e9
#: llama-server started 8 times on an NVIDIA H200 with a 7.1 GB model, timed by its own log.
GPU_COLD_STARTS = BENCHMARKS_DIR / "h200-efficiency-2026-11-27" / "gpu_cold_starts.json"
#: CUDA's start-up and host-to-device copies on the same kind of machine, 5 fresh processes.
CUDA_INIT = BENCHMARKS_DIR / "h200-cuda-init-2026-12-04" / "cuda_init.jsonl"

#: Where the assumptions come from (printed with :meth:`ColdStartBudget.sources`).
MODAL_COLD_START_URL = "https://modal.com/docs/guide/cold-start"
MODAL_GPU_FALLBACKS_URL = "https://modal.com/docs/examples/gpu_fallbacks"
MODAL_LAZY_IMAGES_URL = "https://modal.com/blog/jono-containers-talk"
MODAL_VOLUME_EXAMPLE_URL = ("https://github.com/modal-labs/modal-examples/blob/main/06_gpu_and_ml/llm-serving/"
                            "vllm_low_latency_server.py")

#: 1. GPU placement and container start. Modal's guide *Cold start performance* says starting a
#: container "incurs a cold-start time of ~1s"; that is the low end and the course's value. The high
#: end is an assumption: Modal places a GPU container on a machine with a free GPU of the type asked
#: for, and its example *Set "fallback" GPUs* warns that "GPU availabilities on Modal can fluctuate" —
#: a wait with no published figure. 5 s stands for "a few seconds", not for a measurement.
CONTAINER_START_S = 1.0
CONTAINER_START_RANGE_S = (1.0, 5.0)

#: 2. The image: the files the start reads. Modal does not copy an image before a container starts;
#: its file system fetches a file when the container first reads it (*Fast, lazy container loading
#: in Modal.com*, 2024: "about 2.5 gigabytes per second", 800 MB/s in its first version). What a
#: start of the course's server reads: CUDA's libraries that llama.cpp's CUDA backend links (sizes
#: measured with ``ls -l`` on the course's H200 machine, CUDA 13.0; the image's CUDA 12.9 is of the
#: same order), the files of a Python process with ``modal`` and ``helpers`` imported (431 files,
#: 52.6 MB, read off ``/proc/self/maps`` on the course's 2-core machine), and llama-server with its
#: ggml libraries built for one CUDA architecture — not measured, an assumed 0.05–0.3 GB. All are
#: upper bounds: a library's pages are fetched only as they are touched.
IMAGE_READ_GB_S = 2.5
IMAGE_READ_GB_S_RANGE = (0.8, 2.5)
CUDA_LIBRARY_BYTES = {"libcublasLt.so.13": 541_595_600, "libcublas.so.13": 54_177_976, "libcudart.so.13": 704_288}
PYTHON_START_BYTES = 52_600_000
LLAMA_SERVER_BYTES_RANGE = (50_000_000, 300_000_000)

#: 5. Read bandwidth of a Modal Volume, GB/s. Modal's own LLM-serving example says of loading weights
#: from a Volume: "Typical speeds are around one to two GB/s." The one measurement of the course's
#: model on Modal's L4 — the article's llama-cli run, ``load time = 8146.38 ms`` — is slower than that:
#: with the other stages of the load at the H200's figures it leaves the read about 0.87 GB/s
#: (:func:`calibrated_volume_gb_s`). The budget takes that measurement as its value and keeps Modal's
#: 2 GB/s as the fast end. (The course's H200 machine read its own disk at 1.2 GB/s: the same order.)
DOCUMENTED_VOLUME_GB_S_RANGE = (1.0, 2.0)
#: llama.cpp's ``load time`` runs from the start of the model load to the end of the first decode —
#: the warm-up (``t_load_us`` is set at the first eval) — so it covers these stages of the budget.
LOAD_TIME_STAGES = ("header", "volume", "copy", "warmup")

#: 6. The host link. PCIe doubles its rate per generation; 4.0 x16 is 16 GT/s x 16 lanes with
#: 128b/130b encoding, 31.5 GB/s each way on paper. Each GPU's host link generation is in the GPU
#: catalogue (:mod:`helpers.gpus`, from NVIDIA's datasheets). llama.cpp's default ``mmap`` loading
#: copies from pageable memory, which the driver stages through a pinned buffer with the host's CPU:
#: on the H200 that ran at 6.6–8.6 GB/s while pinned copies ran at 55 GB/s over the same link — the
#: host, not the link, sets the pace. For another GPU the copy rate is min(pageable measured, pinned
#: measured × 2^(generation − 5)): a PCIe 4 link (pinned ≈ 28 GB/s) still has ~4x headroom. The other
#: GPU's host CPU is *assumed* to stage copies as fast as the H200 machine's (no measurement of Modal's
#: L4 hosts).
PCIE4_X16_GB_S = 16e9 * 16 * 128 / 130 / 8 / GB
MEASURED_ON = "H200"  # the machine of CUDA_INIT (its gpu.csv records the link: gen 5 x16)

#: 8. The client: where the first successful token lands. ``helpers.client.stream_chat`` retries a
#: loading server after pauses drawn between 0 and up to ``RETRY_CAP_S`` (4 s), so the attempt that
#: succeeds comes some time *after* the server is ready — see :func:`retry_delay_s`.
#: The article's first-token figures (its section "Cold starts", L4, Qwen3-8B Q5_K_M): ≈20 s after a
#: scale-to-zero, ~12 s warm. The warm 12 s is Qwen3's thinking before its first *content* token
#: (notebook 05's solutions), which a cold request pays as well.
ARTICLE_COLD_FIRST_TOKEN_S = 20.0
ARTICLE_WARM_FIRST_TOKEN_S = 12.0


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@dataclass(frozen=True)
class Measured:
    """A quantity read from the course's recorded runs: every run's value, and their median."""

    values: tuple[float, ...]
    where: str

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return _median(list(self.values))

    @property
    def high(self) -> float:
        return max(self.values)


def recorded_llama_server_phases() -> dict[str, Measured]:
    """The phases of llama-server's start on the H200 (:data:`GPU_COLD_STARTS`, all 8 runs).

    ``cuda``: process start → ``load_model: loading model`` — what comes before the model: loading
    the CUDA backend and initialising CUDA (the log's total minus the phases after it);
    ``header``: the GGUF header and the vocabulary; ``context_warmup``: creating the context (the KV
    cache) and the warm-up decode step. Reading the tensors is not here: it depends on the disk and
    the file, which the budget takes from the Volume and the GGUF size instead.
    """
    import json

    runs = json.loads(GPU_COLD_STARTS.read_text())["runs"]
    where = "llama-server's log, NVIDIA H200, 8 starts (docs/benchmarks/h200-efficiency-2026-11-27)"
    before = [r["log_ready_s"] - r["metadata_s"] - r["tensors_s"] - r["context_s"] - r["warmup_s"] for r in runs]
    return {"cuda": Measured(tuple(before), where),
            "header": Measured(tuple(r["metadata_s"] for r in runs), where),
            "context_warmup": Measured(tuple(r["context_s"] + r["warmup_s"] for r in runs), where)}


def recorded_cuda_init() -> dict[str, Measured]:
    """CUDA alone on the H200 (:data:`CUDA_INIT`): ``init`` (load libcuda → first allocation, s) and
    the host-to-device copy rates, ``pageable`` and ``pinned`` (GB/s)."""
    import json

    runs = [json.loads(line) for line in CUDA_INIT.read_text().splitlines() if line.strip()]
    where = "NVIDIA H200, 5 fresh processes (docs/benchmarks/h200-cuda-init-2026-12-04)"
    return {"init": Measured(tuple(r["total_to_first_alloc_s"] for r in runs), where),
            "pageable": Measured(tuple(r["htod_pageable_GB_s"] for r in runs), where),
            "pinned": Measured(tuple(r["htod_pinned_GB_s"] for r in runs), where)}


def article_load_s() -> float:
    """The article's measured ``load time`` on the L4, seconds (``helpers.logs.ARTICLE_LOG``, llama-cli's
    ``common_perf_print`` line: header, reading and copying the tensors, the context and the warm-up)."""
    from helpers.logs import ARTICLE_LOG, parse_perf

    perf = parse_perf(ARTICLE_LOG.read_text())
    if perf is None or perf.load_ms is None:
        raise RuntimeError(f"{ARTICLE_LOG} has no 'load time' line; restore the article's log")
    return perf.load_ms / 1000


def copy_rates_gb_s(gpu: str) -> tuple[float, float, float]:
    """Copy rate (GB/s) of llama.cpp's default (pageable) weights upload on ``gpu``: low, median, high.

    min(pageable measured, pinned measured × :func:`pcie_scale`) — the H200's pageable copies are limited
    by the host's CPU staging them, not by the link; the link caps them only where it is slower than that.
    """
    cuda = recorded_cuda_init()
    scale = pcie_scale(gpu)
    return tuple(min(p, q * scale) for p, q in ((cuda["pageable"].low, cuda["pinned"].low),
                                                 (cuda["pageable"].median, cuda["pinned"].median),
                                                 (cuda["pageable"].high, cuda["pinned"].high)))


def calibrated_volume_gb_s() -> tuple[float, float, float]:
    """The Volume read rates (GB/s) the article's L4 load implies: (slowest, value, fastest).

    The load time minus the budget's other load stages (header, copy, warm-up on the L4) leaves the time
    of the read; the file is the article's, Qwen3-8B Q5_K_M. With those stages at their course values this
    gives the value; at their low ends (more time left for the read) the slowest rate; at their high ends
    the fastest rate consistent with the one measurement. A fitted value, not a prediction: it reproduces
    the article's load by construction.
    """
    from helpers.model_shape import known_shape
    from helpers.sizes import file_size
    from helpers.speed import expected_decode_tps

    shape = known_shape("Qwen3-8B")
    size = file_size(shape, "Q5_K_M") / GB
    server = recorded_llama_server_phases()
    token = 1 / expected_decode_tps(shape, "Q5_K_M", "L4")
    copy = copy_rates_gb_s("L4")
    load = article_load_s()

    def rate(pick: str, copy_gb_s: float) -> float:
        left = load - getattr(server["header"], pick) - size / copy_gb_s - getattr(server["context_warmup"], pick)
        return size / (left - token)

    # low ends of the other stages: the fastest copy (copy[2]) and the shortest header and warm-up
    return rate("low", copy[2]), rate("median", copy[1]), rate("high", copy[0])


def pcie_scale(gpu: str) -> float:
    """Host-link speed of ``gpu`` relative to the measured H200's (PCIe doubles per generation)."""
    from helpers.gpus import gpu_spec

    return 2.0 ** (gpu_spec(gpu).pcie_generation - gpu_spec(MEASURED_ON).pcie_generation)


def retry_delay_s(cap_s: float) -> float:
    """Mean wait between "ready" and the retry that gets through, for pauses drawn from U(0, ``cap_s``).

    Once a cold start has lasted a few seconds every pause of :func:`helpers.client.retry_while_loading`
    is drawn between 0 and the cap. Readiness falls inside one of those pauses, and a long pause is
    more likely to contain it than a short one (it covers more time): with pause length G the mean
    remaining wait is E[G²] ÷ (2·E[G]) = (cap²/3) ÷ cap = cap ÷ 3.
    """
    return _positive("cap_s", cap_s) / 3


@dataclass(frozen=True)
class Stage:
    """One stage of a cold start: its course value, a low–high range, how it is computed and from what."""

    key: str
    name: str
    low_s: float
    value_s: float
    high_s: float
    formula: str
    source: str
    #: "measured", "documented" (a vendor's published figure), "calibrated" (fitted to the article's one
    #: L4 measurement), "derived" or "given" (a number you passed)
    kind: str


@dataclass(frozen=True)
class ColdStartBudget:
    """The predicted cold start of one container, stage by stage (seconds): from a request that finds no
    container to the first token of the attempt that gets through.

    ``total_s`` is the course's value (every stage at its value, one after the other); ``low_s`` and
    ``high_s`` put every stage at its low or high end. Every notebook and the cost model use these.
    """

    model_bytes: int
    gpu: str
    stages: tuple[Stage, ...]
    volume_gb_s: float
    host_to_device_gb_s: float

    @property
    def total_s(self) -> float:
        return sum(s.value_s for s in self.stages)

    @property
    def low_s(self) -> float:
        return sum(s.low_s for s in self.stages)

    @property
    def high_s(self) -> float:
        return sum(s.high_s for s in self.stages)

    def stage(self, key: str) -> Stage:
        for s in self.stages:
            if s.key == key:
                return s
        raise KeyError(f"no stage {key!r}; the stages are {[s.key for s in self.stages]}")

    # the stages most often asked for, by name
    @property
    def container_start_s(self) -> float:
        return self.stage("container").value_s

    @property
    def volume_read_s(self) -> float:
        return self.stage("volume").value_s

    @property
    def host_to_device_s(self) -> float:
        return self.stage("copy").value_s

    @property
    def warmup_s(self) -> float:
        return self.stage("warmup").value_s

    @property
    def server_ready_s(self) -> float:
        """Up to llama-server's ``/health`` turning 200: every stage but the client's retry."""
        return self.total_s - self.stage("retry").value_s

    def phases(self) -> dict[str, float]:
        """Stage name → seconds (its value), in the order they happen."""
        return {s.name: s.value_s for s in self.stages}

    def to_dict(self) -> dict:
        return {**asdict(self), "total_s": self.total_s, "low_s": self.low_s, "high_s": self.high_s}

    def table(self) -> str:
        """The budget as aligned text: each stage's value, range and formula."""
        lines = [f"{'stage':<40} {'value':>7} {'low':>6} {'high':>6}   how",
                 *(f"{s.name:<40} {s.value_s:6.2f}s {s.low_s:5.2f}s {s.high_s:5.2f}s   {s.formula}"
                   for s in self.stages),
                 f"{'total: request to first token':<40} {self.total_s:6.2f}s {self.low_s:5.2f}s {self.high_s:5.2f}s"]
        return "\n".join(lines)

    def sources(self) -> str:
        """Where each stage's numbers come from, one line each."""
        return "\n".join(f"{s.name}: {s.kind} — {s.source}" for s in self.stages)


def cold_start_budget(model_bytes: int, *, gpu: str = "L4", decode_tps: float | None = None,
                      container_start_s: float | None = None, volume_gb_s: float | None = None,
                      host_to_device_gb_s: float | None = None, retry_cap_s: float | None = None,
                      ) -> ColdStartBudget:
    """The cold start of a container that serves a ``model_bytes`` GGUF file on ``gpu``.

    Each stage has a value and a range from its source (see the module's constants). A number you
    pass replaces its stage's source: it is then known, and the stage has no range.
    ``decode_tps`` is the GPU's speed for this model (the warm-up runs one decode step); without
    it the warm-up counts no decode time beyond the H200's measured one.
    """
    from helpers.client import RETRY_CAP_S

    if not isinstance(model_bytes, int) or isinstance(model_bytes, bool) or model_bytes <= 0:
        raise ValueError(f"model_bytes must be a positive whole number of bytes, got {model_bytes!r}")
    size = model_bytes / GB
    scale = pcie_scale(gpu)
    server, cuda = recorded_llama_server_phases(), recorded_cuda_init()
    volume_slow, volume_value, _ = calibrated_volume_gb_s()

    def fixed_or(value: float | None, name: str, low: float, mid: float, high: float) -> tuple[float, float, float]:
        if value is None:
            return low, mid, high
        v = _positive(name, value)
        return v, v, v

    stages = []
    c = fixed_or(container_start_s, "container_start_s", CONTAINER_START_RANGE_S[0], CONTAINER_START_S,
                 CONTAINER_START_RANGE_S[1])
    stages.append(Stage("container", "GPU placement + container start", *c, "a fixed cost",
                        f"Modal's guide: ~1 s ({MODAL_COLD_START_URL}); more while no GPU is free "
                        f"({MODAL_GPU_FALLBACKS_URL}): assumed up to {CONTAINER_START_RANGE_S[1]:g} s",
                        "documented" if container_start_s is None else "given"))
    libs = sum(CUDA_LIBRARY_BYTES.values()) + PYTHON_START_BYTES
    lo_b, hi_b = (libs + b for b in LLAMA_SERVER_BYTES_RANGE)
    mid_b = (lo_b + hi_b) / 2
    stages.append(Stage("image", "image files the start reads", lo_b / GB / IMAGE_READ_GB_S_RANGE[1],
                        mid_b / GB / IMAGE_READ_GB_S, hi_b / GB / IMAGE_READ_GB_S_RANGE[0],
                        f"{mid_b / GB:.2f} GB / {IMAGE_READ_GB_S:g} GB/s",
                        f"Modal's lazy image loading, {IMAGE_READ_GB_S_RANGE[0]:g}–{IMAGE_READ_GB_S_RANGE[1]:g} GB/s "
                        f"({MODAL_LAZY_IMAGES_URL}); CUDA's libraries measured, llama-server's assumed", "documented"))
    m = server["cuda"]
    stages.append(Stage("cuda", "CUDA initialisation", m.low, m.median, m.high,
                        "measured: process start → model load begins", m.where, "measured"))
    m = server["header"]
    stages.append(Stage("header", "GGUF header and vocabulary", m.low, m.median, m.high,
                        "measured: llama-server's log", m.where, "measured"))
    v = fixed_or(volume_gb_s, "volume_gb_s", DOCUMENTED_VOLUME_GB_S_RANGE[1], volume_value, volume_slow)
    stages.append(Stage("volume", "read the GGUF file from the Volume", size / v[0], size / v[1], size / v[2],
                        f"{size:.2f} GB / {v[1]:.2f} GB/s",
                        f"calibrated on the article's L4 load time ({article_load_s():.2f} s): "
                        f"{volume_slow:.2f}–{volume_value:.2f} GB/s; fast end Modal's example, \"around one to two "
                        f"GB/s\" ({MODAL_VOLUME_EXAMPLE_URL})",
                        "calibrated" if volume_gb_s is None else "given"))
    pageable, pinned = cuda["pageable"], cuda["pinned"]
    rates = copy_rates_gb_s(gpu)
    h = fixed_or(host_to_device_gb_s, "host_to_device_gb_s", rates[2], rates[1], rates[0])
    stages.append(Stage("copy", "copy the weights to GPU memory", size / h[0], size / h[1], size / h[2],
                        f"{size:.2f} GB / {h[1]:.1f} GB/s",
                        f"pageable copies (llama.cpp's default mmap) measured on the H200, {pageable.low:.1f}–"
                        f"{pageable.high:.1f} GB/s, limited by the host's CPU (assumed as fast as the H200 "
                        f"machine's), not the link: pinned {pinned.median:.0f} GB/s x{scale:g} for this GPU's PCIe "
                        f"generation = {pinned.median * scale:.0f} GB/s",
                        "measured" if host_to_device_gb_s is None else "given"))
    m = server["context_warmup"]
    extra = 0.0 if decode_tps is None else 1.0 / _positive("decode_tps", decode_tps)
    stages.append(Stage("warmup", "KV cache + warm-up decode step", m.low + extra, m.median + extra, m.high + extra,
                        "measured on the H200 + one token on this GPU" if extra else "measured on the H200",
                        m.where, "measured"))
    cap = RETRY_CAP_S if retry_cap_s is None else _positive("retry_cap_s", retry_cap_s)
    stages.append(Stage("retry", "client's next retry after ready", 0.0, retry_delay_s(cap), cap,
                        f"pauses of 0–{cap:g} s: mean {cap:g}/3",
                        "helpers.client.stream_chat's backoff (RETRY_CAP_S), derived in retry_delay_s", "derived"))
    return ColdStartBudget(model_bytes=model_bytes, gpu=gpu, stages=tuple(stages), volume_gb_s=v[1],
                           host_to_device_gb_s=h[1])


def model_cold_start_budget(model: str = "Qwen3-8B", quant: str = "Q5_K_M", gpu: str = "L4",
                            **overrides: float) -> ColdStartBudget:
    """:func:`cold_start_budget` for a built-in model shape — the one cold start every notebook uses.

    The file size comes from :mod:`helpers.sizes`, the warm-up's decode step from
    :func:`helpers.speed.expected_decode_tps` on ``gpu`` (the article's measured 41.47 tok/s for the
    course's Qwen3-8B Q5_K_M on the L4).
    """
    from helpers.model_shape import known_shape
    from helpers.sizes import file_size
    from helpers.speed import expected_decode_tps

    shape = known_shape(model)
    overrides.setdefault("decode_tps", expected_decode_tps(shape, quant, gpu))
    return cold_start_budget(file_size(shape, quant), gpu=gpu, **overrides)


@dataclass(frozen=True)
class ArticleCheck:
    """The article's measured load time and first-token times set beside the budget."""

    cold_first_token_s: float  # the article: ≈20 s after scale-to-zero
    warm_first_token_s: float  # the article: ~12 s warm (Qwen3's thinking)
    budget: ColdStartBudget
    measured_load_s: float  # the article's llama-cli log on the L4: load time = 8146.38 ms

    @property
    def implied_cold_start_s(self) -> float:
        """The rough split of the article's two round figures: cold first token − the warm reply's (≈20 − ~12).

        Rough: both figures are approximate, and a cold request's thinking need not last as long as the warm
        one's. :attr:`min_cold_start_s` is the firmer figure.
        """
        return self.cold_first_token_s - self.warm_first_token_s

    def _load_stages(self) -> list[Stage]:
        return [self.budget.stage(k) for k in LOAD_TIME_STAGES]

    @property
    def budget_load_s(self) -> float:
        """The budget's stages that llama.cpp's ``load time`` covers (header, Volume, copy, warm-up): values."""
        return sum(s.value_s for s in self._load_stages())

    @property
    def budget_load_low_s(self) -> float:
        return sum(s.low_s for s in self._load_stages())

    @property
    def budget_load_high_s(self) -> float:
        return sum(s.high_s for s in self._load_stages())

    @property
    def min_cold_start_s(self) -> float:
        """The least cold start the article's measured load allows: the load, plus the stages before it
        (container, image, CUDA) at their low ends; the client's retry at 0."""
        before = sum(self.budget.stage(k).low_s for k in ("container", "image", "cuda"))
        return self.measured_load_s + before

    @property
    def max_cold_thinking_s(self) -> float:
        """What ≈20 s leaves for the cold request's thinking at most: nearer 10 s than the warm 12 s."""
        return self.cold_first_token_s - self.min_cold_start_s

    @property
    def predicted_cold_first_token_s(self) -> float:
        """The budget plus the same reply time a warm request shows."""
        return self.budget.total_s + self.warm_first_token_s


def article_check(budget: ColdStartBudget | None = None) -> ArticleCheck:
    """The article's measured load time and its ≈20 s cold and ~12 s warm first tokens against ``budget``
    (the course's by default)."""
    return ArticleCheck(ARTICLE_COLD_FIRST_TOKEN_S, ARTICLE_WARM_FIRST_TOKEN_S,
                        budget if budget is not None else model_cold_start_budget(), article_load_s())


def snapshot_gpu_bytes(model: str = "Qwen3-8B", quant: str = "Q5_K_M", gpu: str = "L4", n_ctx: int = 65536) -> int:
    """Bytes of GPU memory a running llama-server holds — what a GPU memory snapshot must restore.

    Not just the weights: the KV cache is allocated in full when the server starts (the course's
    8 slots x 8,192 tokens = 65,536 tokens), plus compute buffers and the CUDA context
    (:func:`helpers.memory.memory_breakdown`).
    """
    from helpers.memory import memory_breakdown
    from helpers.model_shape import known_shape
    from helpers.sizes import MIB

    return round(memory_breakdown(known_shape(model), quant, n_ctx, gpu).total_gpu_mib * MIB)


# --- the page cache -----------------------------------------------------------------------

def filesystem_type(path: str | os.PathLike[str]) -> str | None:
    """The type of the filesystem holding ``path`` (``ext4``, ``tmpfs``…), from /proc/self/mountinfo.

    On tmpfs the page cache *is* the storage, so nothing can be evicted there. None where the
    kernel does not tell (not Linux).
    """
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount_point = fields[4].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, right.split()[0]
    return best_type


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        return libc
    except (OSError, AttributeError):
        return None


def resident_fraction(path: str | os.PathLike[str]) -> float | None:
    """Fraction of ``path``'s pages that are in the page cache right now (0.0 … 1.0).

    Asks the kernel with ``mincore(2)`` (through ``ctypes``: Python's standard library has no
    wrapper) on a mapping of the file that is never touched, so asking reads nothing. None
    where ``mincore`` is not available.
    """
    size = os.path.getsize(path)
    libc = _libc()
    if libc is None or size == 0:
        return None
    page = mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            pages = (size + page - 1) // page
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(addr, size, vec) != 0:
                return None
            return (pages - bytes(vec).count(0)) / pages
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def evict(path: str | os.PathLike[str]) -> None:
    """Drop ``path`` from the page cache, without root: ``posix_fadvise(POSIX_FADV_DONTNEED)``.

    Dirty pages cannot be dropped, so the file is flushed first. Pages that another process has
    mapped (a llama-server still running on the same file) stay: measure on a private copy.
    """
    if not hasattr(os, "posix_fadvise"):
        raise OSError("this system has no posix_fadvise (it is a Linux call), so the page cache cannot be "
                      "emptied here; measure with cache='warm' only")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def prewarm(path: str | os.PathLike[str], chunk: int = 8 << 20) -> float:
    """Read ``path`` once so that its pages are in the page cache; return the read's GB/s."""
    started = time.perf_counter()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while block := f.read(chunk):
            n += len(block)
    return n / max(time.perf_counter() - started, 1e-9) / GB


# --- the stopwatch ------------------------------------------------------------------------

CACHE_STATES = ("cold", "warm")
#: What llama-server must print for the stopwatch: a timestamp on every line, and the
#: loader's lines (verbosity 4 shows them; 3, the default, hides them).
LOG_ARGS = ("--log-timestamps", "--log-prefix", "--log-verbosity", "4")
#: Log lines that mark the phases of a start (substrings of llama-server's messages).
LOG_EVENTS = {
    "start": "load_model: loading model",
    "tensors": "load_tensors: loading model tensors",
    "context": "llama_context: constructing llama_context",
    "warmup": "warming up the model",
    "slots": "load_model: initializing",
    "ready": "llama_server: model loaded",
}
_STAMP = re.compile(r"^(\d+)\.(\d{2})\.(\d{3})\.(\d{3}) ")
_LOAD_MODE = re.compile(r"\(load_mode = ([\w+]+)\)")


def parse_log_times(text: str) -> dict[str, float]:
    """Seconds since the process started at which each :data:`LOG_EVENTS` line was logged.

    ``--log-timestamps`` writes ``minutes.seconds.milliseconds.microseconds`` at the start of a
    line; the first line that contains an event's text counts.
    """
    times: dict[str, float] = {}
    for line in text.splitlines():
        stamp = _STAMP.match(line)
        if not stamp:
            continue
        for event, needle in LOG_EVENTS.items():
            if event not in times and needle in line:
                m, s, ms, us = (int(g) for g in stamp.groups())
                times[event] = m * 60 + s + ms / 1e3 + us / 1e6
    return times


def logged_load_mode(text: str) -> str | None:
    """The loading mode llama.cpp reports (``load_tensors: … (load_mode = mmap)``), or None."""
    found = _LOAD_MODE.search(text)
    return found.group(1) if found else None


@dataclass(frozen=True)
class LoadMeasurement:
    """One timed start of llama-server on this machine (seconds unless named otherwise)."""

    model: str
    model_bytes: int
    load_mode: str
    cache: str
    #: Fraction of the file in the page cache just before the start (0 = really cold), and after it.
    resident_before: float | None
    resident_after: float | None
    #: Process start → ``model loaded`` by llama-server's own clock (the precise figure).
    log_ready_s: float
    #: The parts of it: reading the header and the tokenizer, reading the file and placing the
    #: tensors, creating the context (KV cache), and the warm-up decode step.
    metadata_s: float
    tensors_s: float
    context_s: float
    warmup_s: float
    #: :class:`~helpers.runtime.LocalServer`'s ``ready_s``: its /health poll backs off, so this is late
    #: by up to its last pause.
    poll_ready_s: float
    #: What llama.cpp says it did (``mmap`` or ``none``): proof that the setting reached it.
    logged_mode: str | None

    @property
    def read_gb_s(self) -> float:
        """File size ÷ the tensor-loading phase."""
        return self.model_bytes / self.tensors_s / GB if self.tensors_s > 0 else float("inf")

    def to_dict(self) -> dict:
        return asdict(self)


def _wait_for_text(path: Path, needle: str, timeout_s: float = 5.0) -> str:
    """The log's text once it contains ``needle`` (llama-server's logger writes from a thread)."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = path.read_text(errors="replace")
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.02)


def wait_for_port(host: str, port: int, timeout_s: float = 30.0, pause_s: float = 0.005) -> float:
    """Wait until ``host:port`` accepts a TCP connection; return the seconds waited.

    What Modal waits for before it routes requests to a ``@modal.web_server`` container: the port
    accepting connections — for llama-server that happens *before* its model is loaded, so the
    first requests meet its own ``503 Loading model``.
    """
    import socket

    started = time.monotonic()
    while True:
        try:
            socket.create_connection((host, port), timeout=0.1).close()
            return time.monotonic() - started
        except OSError:
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"nothing accepted connections on {host}:{port} within {timeout_s:g} s; "
                                   f"is the server starting (see its log)?") from None
            time.sleep(pause_s)


def measure_ready(model: str | os.PathLike[str], *, load_mode: str = "mmap", cache: str = "cold",
                  threads: int | None = 1, parallel: int = 1, ctx_per_slot: int = 1024,
                  timeout_s: float = 300.0) -> LoadMeasurement:
    """Start llama-server on ``model`` once and time it until it is ready.

    ``load_mode``: ``mmap`` (llama.cpp's default) or ``none`` (read into the process's memory).
    ``cache``: ``cold`` evicts the file from the page cache first (:func:`evict`), ``warm`` reads
    it in first (:func:`prewarm`). The file should be one no running process has mapped, or the
    eviction cannot take its pages: copy it somewhere private first.

    ``threads=1`` by default: llama.cpp's CPU threads wait for each other at every step of the
    warm-up by spinning, so when anything else runs on a small machine a two-thread warm-up
    takes anywhere from 0.5 to 6 s (measured on 2 cores), one thread a steady fraction of a
    second. None lets llama-server choose (one thread per core).
    """
    from helpers import process
    from helpers.commands import ServerSettings
    from helpers.runtime import LocalServer, check_model_file

    if load_mode not in LOAD_MODES:
        raise ValueError(f"load_mode must be one of {LOAD_MODES}, got {load_mode!r}")
    if cache not in CACHE_STATES:
        raise ValueError(f"cache must be one of {CACHE_STATES}, got {cache!r}")
    path = check_model_file(model)
    if cache == "cold":
        evict(path)
    else:
        prewarm(path)
    before = resident_fraction(path)
    settings = ServerSettings(model=str(path), port=process.free_port(), parallel=parallel, threads=threads,
                              ctx_per_slot=ctx_per_slot, load_mode=load_mode, extra_args=LOG_ARGS)
    server = LocalServer(settings, ready_timeout_s=timeout_s, keep_log=True)
    try:
        with server:
            text = _wait_for_text(server.log_path, LOG_EVENTS["ready"])
    finally:
        if server.ready_s is not None and server.log_path is not None:
            server.log_path.unlink(missing_ok=True)  # kept only when the start failed
    times = parse_log_times(text)
    missing = [event for event in LOG_EVENTS if event not in times]
    if missing:
        raise RuntimeError(f"llama-server's log lacks the lines for {missing}; this llama.cpp logs differently "
                           f"than the stopwatch expects (see helpers.coldstart.LOG_EVENTS)")
    return LoadMeasurement(
        model=path.name, model_bytes=path.stat().st_size, load_mode=load_mode, cache=cache,
        resident_before=before, resident_after=resident_fraction(path), log_ready_s=times["ready"],
        metadata_s=times["tensors"] - times["start"], tensors_s=times["context"] - times["tensors"],
        context_s=times["warmup"] - times["context"], warmup_s=times["slots"] - times["warmup"],
        poll_ready_s=server.ready_s, logged_mode=logged_load_mode(text),
    )


def measure_table(models: Iterable[str | os.PathLike[str]], repeats: int = 3,
                  load_modes: Sequence[str] = LOAD_MODES, caches: Sequence[str] = CACHE_STATES
                  ) -> list[LoadMeasurement]:
    """:func:`measure_ready` for every model × loading mode × cache state, ``repeats`` times each."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    return [measure_ready(m, load_mode=mode, cache=cache)
            for m in models for mode in load_modes for cache in caches for _ in range(repeats)]


def summarize_table(rows: Sequence[LoadMeasurement]) -> str:
    """A Markdown table: the median of each (model, mode, cache) group, and how many runs it had."""
    groups: dict[tuple[str, str, str], list[LoadMeasurement]] = {}
    for r in rows:
        groups.setdefault((r.model, r.load_mode, r.cache), []).append(r)
    out = ["| model | size | load mode | page cache | ready (log) | header | tensors | read GB/s | context "
           "| warm-up | ready (poll) | cached before | runs |",
           "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (model, mode, cache), rs in groups.items():
        med = {k: _median([getattr(r, k) for r in rs])
               for k in ("log_ready_s", "metadata_s", "tensors_s", "context_s", "warmup_s", "poll_ready_s")}
        gb_s = _median([r.read_gb_s for r in rs])
        before = max((r.resident_before or 0.0) for r in rs)
        out.append(f"| {model} | {rs[0].model_bytes / 2**20:,.0f} MiB | {mode} | {cache} | {med['log_ready_s']:.2f} s "
                   f"| {med['metadata_s']:.2f} s | {med['tensors_s']:.2f} s | {gb_s:.1f} | {med['context_s']:.2f} s "
                   f"| {med['warmup_s']:.2f} s | {med['poll_ready_s']:.2f} s | ≤{before:.0%} | {len(rs)} |")
    return "\n".join(out)


#: A mid-size synthetic Qwen3 (about 1.2 GB in F16) for the local measurement: big enough that
#: reading it shows in the timings, small enough to write in seconds.
COLDSTART_SPEC_FIELDS = {"name": "coldstart", "n_layer": 12, "n_embd": 2048, "n_ff": 6144, "n_head": 16,
                         "n_head_kv": 8, "head_dim": 128}


def coldstart_spec():  # noqa: ANN201 - a SyntheticSpec (imported lazily)
    from helpers.synthetic import TINY

    return replace(TINY, **COLDSTART_SPEC_FIELDS)


def local_models(directory: str | os.PathLike[str]) -> list[Path]:
    """The two models of the local table, as private files in ``directory``.

    The synthetic Qwen3 is written there; SmolLM2 is copied there, so that no other running
    llama-server has these files mapped and :func:`evict` can really empty the cache.
    """
    from helpers.models import resolve_model
    from helpers.synthetic import write_synthetic_model

    directory = Path(directory)
    spec = coldstart_spec()
    synthetic = write_synthetic_model(directory / spec.file_name(), spec)
    smol = resolve_model("smollm2", progress=False)
    private = directory / smol.name
    shutil.copyfile(smol, private)
    return [synthetic, private]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.coldstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="Qwen3-8B", help="a built-in model shape (default Qwen3-8B)")
    parser.add_argument("--quant", default="Q5_K_M")
    parser.add_argument("--gpu", default="L4")
    parser.add_argument("--measure", action="store_true", help="time llama-server starts on this machine")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (default 3)")
    parser.add_argument("--json", help="also write every measurement to this JSON file")
    args = parser.parse_args(argv)
    try:
        budget = model_cold_start_budget(args.model, args.quant, args.gpu)
        print(f"Cold start of {args.model} {args.quant} ({budget.model_bytes / GB:.2f} GB) on an {args.gpu}:")
        print(budget.table())
        print("\nsources:\n" + budget.sources())
        if not args.measure:
            return 0
        if args.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
        with tempfile.TemporaryDirectory(prefix="coldstart-") as tmp:
            print(f"\nwriting the models to {tmp} ({filesystem_type(tmp) or 'unknown filesystem'}) …", flush=True)
            rows = measure_table(local_models(tmp), repeats=args.repeats)
        print(f"\nllama-server starts on this machine ({os.cpu_count()} CPU cores), medians:")
        print(summarize_table(rows))
        if args.json:
            from helpers.results import write_json

            write_json({"budget": budget.to_dict(), "measurements": [r.to_dict() for r in rows]}, args.json)
        return 0
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
