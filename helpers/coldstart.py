"""Cold starts of a llama-server: a budget from sizes and bandwidths, and a stopwatch for this machine.

A *cold start* is everything between "a request arrives and no container is running" and
"llama-server answers it". For one container it has four parts, each a size divided by a
bandwidth or a fixed cost:

1. **container start** — Modal allocates a machine and starts the container;
2. **reading the GGUF file from the Volume** — file size ÷ the Volume's read bandwidth;
3. **copying the weights into GPU memory** — file size ÷ the host-to-device (PCIe) bandwidth;
4. **warm-up** — llama-server runs one empty decode step before it says it is ready, which reads
   every weight once: one token's time at the GPU's expected decode speed.

:func:`cold_start_budget` adds them up for any file size; :func:`model_cold_start_budget` does
it for a model and quantization the calculators know (the course's Qwen3-8B Q5_K_M: 5.85 GB).

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

    python -m helpers.coldstart            # the budget for Qwen3-8B Q5_K_M on an L4
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

# --- the budget ---------------------------------------------------------------------------

GB = 1e9

#: Container start, in seconds. Modal's guide "Cold start performance"
#: (https://modal.com/docs/guide/cold-start) states that starting up a container "incurs a
#: cold-start time of ~1s"; the code that runs after that (for us: llama-server) is the rest of
#: the budget. A GPU container with a large image can take longer: read the real figure off your
#: own container's log and pass it as ``container_start_s``.
CONTAINER_START_S = 1.0

#: Read bandwidth of a Modal Volume, GB/s. Modal's own LLM-serving example
#: (modal-labs/modal-examples, 06_gpu_and_ml/llm-serving/vllm_low_latency_server.py) says of
#: loading weights from a Volume: "Typical speeds are around one to two GB/s." We take the middle
#: of that range; :data:`VOLUME_READ_GB_S_RANGE` keeps both ends.
VOLUME_READ_GB_S = 1.5
VOLUME_READ_GB_S_RANGE = (1.0, 2.0)

#: PCIe 4.0 x16 (the L4's host link): 16 GT/s per lane x 16 lanes with 128b/130b encoding is
#: 31.5 GB/s in each direction on paper. Copies from pinned host memory reach roughly 80% of it,
#: so the budget assumes 25 GB/s; it is a parameter because it is an assumption, not a datasheet.
PCIE4_X16_GB_S = 16e9 * 16 * 128 / 130 / 8 / GB
PCIE4_X16_EFFECTIVE_GB_S = float(round(0.8 * PCIE4_X16_GB_S))  # 25.0


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ColdStartBudget:
    """The predicted cold start of one container, phase by phase (seconds).

    ``total_s`` adds the phases one after the other. llama.cpp can overlap two of them: when it
    reads the file without mmap it copies each chunk to the GPU from pinned memory while the
    next chunk is being read, so the slower of reading and copying sets the pace —
    ``overlapped_s`` is that lower bound.
    """

    model_bytes: int
    container_start_s: float
    volume_read_s: float
    host_to_device_s: float
    warmup_s: float
    volume_gb_s: float
    host_to_device_gb_s: float

    @property
    def total_s(self) -> float:
        return self.container_start_s + self.volume_read_s + self.host_to_device_s + self.warmup_s

    @property
    def overlapped_s(self) -> float:
        return self.container_start_s + max(self.volume_read_s, self.host_to_device_s) + self.warmup_s

    def phases(self) -> dict[str, float]:
        """Phase name → seconds, in the order they happen."""
        return {"container start": self.container_start_s, "read GGUF from the Volume": self.volume_read_s,
                "copy weights to GPU memory": self.host_to_device_s, "warm-up (one decode step)": self.warmup_s}

    def to_dict(self) -> dict:
        return {**asdict(self), "total_s": self.total_s, "overlapped_s": self.overlapped_s}

    def table(self) -> str:
        """The budget as aligned text lines, with each formula."""
        size = self.model_bytes / GB
        formulas = {"container start": "from Modal's guide",
                    "read GGUF from the Volume": f"{size:.2f} GB / {self.volume_gb_s:g} GB/s",
                    "copy weights to GPU memory": f"{size:.2f} GB / {self.host_to_device_gb_s:g} GB/s",
                    "warm-up (one decode step)": "1 token at the expected decode speed"}
        lines = [f"{name:<30} {seconds:7.2f} s   {formulas[name]}" for name, seconds in self.phases().items()]
        lines.append(f"{'total (one after another)':<30} {self.total_s:7.2f} s")
        lines.append(f"{'total (read and copy overlap)':<30} {self.overlapped_s:7.2f} s")
        return "\n".join(lines)


def cold_start_budget(model_bytes: int, *, container_start_s: float = CONTAINER_START_S,
                      volume_gb_s: float = VOLUME_READ_GB_S, host_to_device_gb_s: float = PCIE4_X16_EFFECTIVE_GB_S,
                      warmup_s: float = 0.0) -> ColdStartBudget:
    """The cold start of a container that serves a ``model_bytes`` GGUF file.

    Every phase but the container start is a size divided by a bandwidth; pass your own
    bandwidths (decimal GB/s) to see which phase a faster disk or link would shorten.
    """
    if not isinstance(model_bytes, int) or model_bytes <= 0:
        raise ValueError(f"model_bytes must be a positive whole number of bytes, got {model_bytes!r}")
    if container_start_s < 0 or warmup_s < 0:
        raise ValueError("container_start_s and warmup_s must be >= 0 seconds")
    volume_gb_s = _positive("volume_gb_s", volume_gb_s)
    host_to_device_gb_s = _positive("host_to_device_gb_s", host_to_device_gb_s)
    return ColdStartBudget(
        model_bytes=model_bytes, container_start_s=float(container_start_s),
        volume_read_s=model_bytes / (volume_gb_s * GB), host_to_device_s=model_bytes / (host_to_device_gb_s * GB),
        warmup_s=float(warmup_s), volume_gb_s=volume_gb_s, host_to_device_gb_s=host_to_device_gb_s,
    )


def model_cold_start_budget(model: str = "Qwen3-8B", quant: str = "Q5_K_M", gpu: str = "L4",
                            **overrides: float) -> ColdStartBudget:
    """:func:`cold_start_budget` for a built-in model shape: its file size from :mod:`helpers.sizes`,
    its warm-up from the expected decode speed on ``gpu`` (:mod:`helpers.speed`).

    llama-server's warm-up is one decode step on an empty context, which reads every weight
    once: 1 ÷ tokens per second. What CUDA does once per process (creating its context, loading
    kernels) is not a size over a bandwidth and is not in the budget; it shows up in the
    container's log.
    """
    from helpers.model_shape import known_shape
    from helpers.sizes import file_size
    from helpers.speed import expected_decode_tps

    shape = known_shape(model)
    overrides.setdefault("warmup_s", 1.0 / expected_decode_tps(shape, quant, gpu))
    return cold_start_budget(file_size(shape, quant), **overrides)


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


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


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
