"""The GPU catalogue: every GPU type Modal rents, what it holds, how fast it reads, what it costs.

One table serves the whole course — the memory calculator (how many MiB a card has), the
speed limit (how many GB/s it reads), the cost figures (what a second of it costs) and the
Modal image (which CUDA architecture to compile for) — so they can never disagree about
which GPUs exist.

Names are Modal's ``gpu=`` strings (modal.com/docs/guide/gpu). A few of them are not one
card but a promise about one: ``"H100"`` may be served by an H200, ``"A100"`` by an 80 GB
A100, ``"B200+"`` by a B300. The calculators use the card named (the smaller one); the image
compiles for every architecture the name may land on.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The day the prices below were read from modal.com/pricing (per-second list prices, GPU only:
#: a container's CPU and memory are billed on top and are small next to a GPU).
RATE_CARD_DATE = "2026-05-07"


@dataclass(frozen=True)
class Gpu:
    """One card. ``memory_mib`` is what CUDA reports as total (measured where we could: the
    L4 from the article's log, the H200 from our own runs; else the datasheet);
    ``bandwidth_gb_s`` the datasheet's memory bandwidth in decimal GB/s;
    ``cuda_overhead_mib`` what CUDA and cuBLAS take outside llama.cpp's buffers (llama.cpp's
    "unaccounted" column: 254 MiB on the L4, 597 MiB on the H200, rounded up);
    ``pcie_generation`` the card's host link (NVIDIA's datasheets; the cold start's copy stage);
    ``fp32_tflops`` the CUDA cores' FP32 throughput where the course uses it (:data:`FP32_TFLOPS_SOURCES`):
    batch-1 decoding's mat-vec kernels run on the CUDA cores, not the tensor cores."""

    name: str
    memory_mib: int
    bandwidth_gb_s: float
    cuda_arch: str
    usd_per_s: float | None  # None: no list price recorded on RATE_CARD_DATE
    cuda_overhead_mib: int = 400
    max_count: int = 8  # GPUs one container can have
    pcie_generation: int = 4
    fp32_tflops: float | None = None

    @property
    def usd_per_hour(self) -> float | None:
        return None if self.usd_per_s is None else self.usd_per_s * 3600


GPUS: dict[str, Gpu] = {g.name: g for g in (
    Gpu("T4", 15360, 320, "75", 0.000164, 300, pcie_generation=3, fp32_tflops=8.1),
    Gpu("L4", 22563, 300, "89", 0.000222, 300, fp32_tflops=30.3),
    Gpu("A10", 23028, 600, "86", 0.000306, 300, max_count=4),
    Gpu("L40S", 46068, 864, "89", 0.000542, 400),
    Gpu("A100-40GB", 40536, 1555, "80", 0.000583, 500),
    Gpu("A100-80GB", 81251, 2039, "80", 0.000694, 500),
    # ggml builds "120a" for the RTX PRO 6000, the FP4-capable variant
    Gpu("RTX-PRO-6000", 97887, 1792, "120", None, 600, pcie_generation=5),
    Gpu("H100", 81559, 3350, "90", 0.001097, 600, pcie_generation=5),
    Gpu("H200", 143155, 4800, "90", 0.001261, 600, pcie_generation=5, fp32_tflops=67.0),
    Gpu("B200", 182272, 8000, "100", 0.001736, 700, pcie_generation=5),
)}

#: Where each ``fp32_tflops`` comes from (dense FP32 at boost clock, NVIDIA's datasheets).
FP32_TFLOPS_SOURCES = {
    "T4": "https://www.nvidia.com/en-us/data-center/tesla-t4/ (datasheet: 8.1 TFLOPS single precision)",
    "L4": "https://www.nvidia.com/en-us/data-center/l4/ (datasheet: 30.3 TFLOPS FP32)",
    "H200": "https://www.nvidia.com/en-us/data-center/h200/ (datasheet, H200 SXM: 67 TFLOPS FP32)",
}

#: Modal's other names and the card the calculators assume for them. "A10G" is the A10's
#: older name; "A100" may be served by either A100; "H100!" is an H100 and never an H200;
#: "B200+" is a B200 or a B300 — two architectures, so the image compiles both.
ALIASES = {"A10G": "A10", "A100": "A100-40GB", "H100!": "H100", "B200+": "B200"}
_ARCH_OF_ALIAS = {"B200+": "100;103"}
MODAL_GPU_TYPES = (*GPUS, *ALIASES)


def gpu_spec(name: str) -> Gpu:
    """The catalogue entry for a Modal GPU type (any case, aliases allowed, no ``:N``)."""
    key = str(name).strip().upper()
    if key in ALIASES:
        return GPUS[ALIASES[key]]
    if key in GPUS:
        return GPUS[key]
    if ":" in key:
        raise ValueError(f"{name!r}: the calculators plan one GPU; drop the ':N' count")
    raise ValueError(f"unknown GPU {name!r}; Modal GPU types: {', '.join(MODAL_GPU_TYPES)}")


@dataclass(frozen=True)
class ModalGpu:
    """A Modal ``gpu=`` value, checked: its type (upper case, as Modal writes it) and count."""

    type: str
    count: int = 1

    @property
    def spec(self) -> str:
        """The string for ``@app.function(gpu=...)``: ``L4``, ``H100:2``."""
        return self.type if self.count == 1 else f"{self.type}:{self.count}"

    @property
    def cuda_architectures(self) -> str:
        return _ARCH_OF_ALIAS.get(self.type) or gpu_spec(self.type).cuda_arch


def parse_modal_gpu(value: str) -> ModalGpu:
    """``"l4"``, ``"H100!"``, ``"b200+:2"`` -> :class:`ModalGpu`; a one-line error for anything else.

    Modal reads GPU types case-insensitively and checks them only when an app starts, after
    the image has been built. Checking here fails before anything is spent.
    """
    text = str(value).strip()
    name, _, count_text = text.partition(":")
    gpu_type = name.strip().upper()
    if gpu_type not in MODAL_GPU_TYPES:
        raise ValueError(f"{text!r} is not a Modal GPU type; choose one of {', '.join(MODAL_GPU_TYPES)} "
                         "(optionally with a count, e.g. H100:2)")
    count = 1
    if count_text:
        most = gpu_spec(gpu_type).max_count
        if not count_text.strip().isdigit() or not 1 <= int(count_text) <= most:
            raise ValueError(f"GPU count in {text!r} must be a whole number from 1 to {most}")
        count = int(count_text)
    return ModalGpu(gpu_type, count)


def gpu_cost_usd(gpu: str, seconds: float) -> float:
    """What ``seconds`` of one GPU cost at Modal's list price of :data:`RATE_CARD_DATE`."""
    spec = gpu_spec(gpu)
    if spec.usd_per_s is None:
        raise ValueError(f"no list price recorded for the {spec.name}; see modal.com/pricing")
    return spec.usd_per_s * seconds
