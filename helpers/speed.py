"""How fast a GPU can generate, and what a token costs: one speed model, fitted to the course's measurements.

Generating one token at batch size 1 reads every weight once, so memory bandwidth sets a hard
limit — the *roofline*: bandwidth ÷ bytes read per token (:func:`decode_roofline`). Real runs
stay below it for two reasons, and the model keeps both:

    time per token = fixed + bytes read per token ÷ effective bandwidth

* **fixed** — the ~1,300 small GPU operations a token runs one after another (launches,
  norms, synchronisation), which cost the same however wide the matrices are. It is measured
  on the H200 with two models that share one graph and differ only in width (llama-bench,
  ``docs/benchmarks/h200-2026-11-27/suite.json``): the difference of their times is due to the
  bytes alone (:func:`decode_time_model`).
* **effective bandwidth** — the rate at which a type's kernels stream its weights, a fraction of
  the datasheet's. On the H200 it is measured *per quantization type* (llama-batched-bench, one
  stream, ``docs/benchmarks/h200-efficiency-2026-11-27/quant_scaling.json``) because the types do
  not share one: Q8_0 streams at ~59% of the peak, the K-quants at ~40% — they unpack more per
  byte, and on a GPU this fast the unpacking, not the memory, *likely* sets their pace (an
  inference from four points, not a profiler's counters). So on an H200 "speed ratios are byte
  ratios" is false: Q8_0 reads 1.5× the bytes of Q5_K_M and runs at 0.98× its speed. (One
  bandwidth shared by all four types does not fit: the straight line through them,
  :func:`one_bandwidth_fit`, needs more than the H200's peak and misses by up to 10%.)

On an **L4** the one measured point is the article's Q5_K_M run (41.47 tokens/s). With the same
fixed part it streams at ~80% of the L4's 300 GB/s. The H200's per-type differences cannot carry
over: Q8_0 at 1.4× Q5_K_M's rate would be faster than the L4's memory allows. The batch-1
mat-vec kernels (MMVQ, dp4a) run on the CUDA cores, not the tensor cores, so the arithmetic that
counts is the CUDA cores': per byte of bandwidth an L4 has about seven times an H200's
(:func:`arithmetic_per_byte`, from NVIDIA's datasheets), so the unpacking likely hides behind the
slow memory: the model lets *every* type stream at the measured Q5_K_M fraction there. Every other GPU's
fraction is interpolated log-linearly in bandwidth between the L4 and the H200 (faster memory,
smaller share, as the two measured GPUs show), per type. All of that is a *prediction*;
:func:`speed_label` says for each GPU and type whether a figure is measured (and where) or
predicted (and from what), so notebooks can print it next to every number.

Nothing here is typed in: the measured speeds are read from the recorded files and the article's
log (:func:`measurements`), and the parameters are fitted from them on first use.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field, replace

from helpers.config import BENCHMARKS_DIR
from helpers.gpus import GPUS, gpu_cost_usd, gpu_spec
from helpers.memory import kv_bytes_per_token
from helpers.model_shape import ModelShape, known_shape
from helpers.sizes import tensor_data_bytes

#: llama-bench tg128 of the synthetic Qwen3-8B and its narrow twin (same graph, a quarter of the width).
LLAMA_BENCH_FILE = BENCHMARKS_DIR / "h200-2026-11-27" / "suite.json"
#: llama-batched-bench, 128-token prompt + 128 generated tokens, per quantization type and batch size.
QUANT_SCALING_FILE = BENCHMARKS_DIR / "h200-efficiency-2026-11-27" / "quant_scaling.json"
#: The article's run of Qwen3-8B Q5_K_M on a Modal L4 (its last log lines).
ARTICLE_URL = "https://abhijeetmeena.com/blog/exploring-llm-inference-on-modal-gpus"
#: The GPUs with measurements; every other GPU is predicted between them.
MEASURED_GPUS = ("L4", "H200")


def bytes_per_token(shape: ModelShape, quant: str, n_past: float = 0, kv_type: str = "f16") -> float:
    """Bytes read from memory to generate one token at batch size 1.

    Every weight matrix is read once per token — except the embedding table, of which only
    one row is looked up — plus the KV cache of the ``n_past`` tokens already in context (an
    average context, as a decode of many tokens has, may be a fraction).
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


def significant(x: float, digits: int = 2) -> str:
    """``x`` to ``digits`` significant figures, with thousands separators: how precisely a
    prediction may be printed (3.79 → "3.8", 1,240.02 → "1,200")."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    decimals = digits - 1 - math.floor(math.log10(abs(x)))
    rounded = round(x, decimals)
    return f"{rounded:,.{max(decimals, 0)}f}"


# --- arithmetic against memory ------------------------------------------------------------------
def arithmetic_per_byte(gpu: str) -> float:
    """FLOP the CUDA cores can do per byte the memory delivers (datasheet FP32 ÷ datasheet bandwidth,
    both from :mod:`helpers.gpus`). Batch-1 decoding's quantized mat-vec kernels (MMVQ, dp4a) run on the
    CUDA cores, not the tensor cores, so this — not the tensor-core peak — is the arithmetic that
    unpacks and multiplies the weights.

    A batch-1 mat-vec needs only ~3 FLOP per byte of a 5-bit type (:func:`matvec_flop_per_byte`),
    far below any GPU's ratio — so reading sets the pace, until unpacking the blocks adds enough
    work per byte to close the gap. The smaller the ratio, the sooner that happens: an H200 has
    ~14 FLOP per byte, an L4 ~100.
    """
    spec = gpu_spec(gpu)
    if spec.fp32_tflops is None:
        recorded = ", ".join(g.name for g in GPUS.values() if g.fp32_tflops is not None)
        raise ValueError(f"no CUDA-core FLOPS recorded for {gpu!r}; recorded: {recorded} (helpers.gpus)")
    return spec.fp32_tflops * 1e12 / (spec.bandwidth_gb_s * 1e9)


def matvec_flop_per_byte(quant: str, shape: ModelShape | None = None) -> float:
    """FLOP per byte of weights a batch-1 mat-vec needs: one multiply-add (2 FLOP) per weight, before
    any unpacking, ÷ the type's bytes per weight."""
    from helpers.quant import bits_per_weight

    return 2 / (bits_per_weight(shape or QWEN3_8B, quant) / 8)


# --- the measurements ---------------------------------------------------------------------------
QWEN3_8B = known_shape("Qwen3-8B")
#: The H200 suite's "narrow" twin: Qwen3-8B's 36 layers and vocabulary (the same 1,266 graph nodes per
#: token) at a quarter of the width — ~12x fewer bytes (helpers.gpu_suite builds it).
NARROW_TWIN = QWEN3_8B.with_(name="narrow", n_embd=1024, n_ff=3072, n_head=8, n_head_kv=2)


@dataclass(frozen=True)
class Measurement:
    """One recorded batch-1 decode speed: where, with what, and at which average context."""

    gpu: str
    quant: str
    shape: ModelShape
    tokens_per_s: float
    n_past: float  # average tokens in context while the measured tokens were generated
    tool: str
    source: str  # in words: who measured it, where

    @property
    def model(self) -> str:
        return "Qwen3-8B" if self.shape == QWEN3_8B else "Qwen3-8B's narrow twin"

    @property
    def bytes_per_token(self) -> float:
        return bytes_per_token(self.shape, self.quant, self.n_past)


@functools.cache
def measurements() -> tuple[Measurement, ...]:
    """Every recorded batch-1 decode speed the model uses, read from the files (never typed in).

    * the article's L4 run (its log in ``helpers/data``): 9-token prompt, 303 generated tokens;
    * the course's H200 runs of the synthetic Qwen3-8B (speed depends on shapes and types, not on
      the weights' values): llama-batched-bench at one stream per type (128-token prompt, 128
      tokens), and llama-bench tg128 with flash attention of Q5_K_M and of its narrow twin.

    The average context of a decode of ``n`` tokens after a ``p``-token prompt is ``p + n / 2``.
    """
    from helpers.logs import ARTICLE_LOG, parse_perf

    out = []
    perf = parse_perf(ARTICLE_LOG.read_text())
    out.append(Measurement("L4", "Q5_K_M", QWEN3_8B, perf.eval_tokens_per_s,
                           perf.prompt_tokens + perf.eval_tokens / 2, "llama-cli",
                           "the article's run on a Modal L4"))
    for quant, rows in json.loads(QUANT_SCALING_FILE.read_text()).items():
        (one,) = [r for r in rows if r["b"] == 1]
        out.append(Measurement("H200", quant, QWEN3_8B, one["s_tg"], one["pp"] + one["tg"] / 2,
                               "llama-batched-bench", "the course's H200 run"))
    suite = json.loads(LLAMA_BENCH_FILE.read_text())
    for name, shape in (("qwen3-8b", QWEN3_8B), ("narrow-36l", NARROW_TWIN)):
        (tg,) = [r for r in suite["llama_bench"][name] if r["n_gen"] and r["flash_attn"]]
        out.append(Measurement("H200", "Q5_K_M", shape, tg["avg_ts"], tg["n_gen"] / 2, "llama-bench tg128",
                               "the course's H200 run"))
    return tuple(out)


def _measured(gpu: str, quant: str, tool: str | None = None, shape: ModelShape = QWEN3_8B) -> Measurement | None:
    for m in measurements():
        if m.gpu == gpu and m.quant == quant and m.shape == shape and (tool is None or m.tool == tool):
            return m
    return None


def reference_context() -> float:
    """The context at which :func:`expected_decode_tps` quotes speeds by default: the article's run
    (a short prompt and a ~300-token answer, ~160 tokens on average) — so the L4's Q5_K_M
    prediction *is* that run."""
    return _measured("L4", "Q5_K_M").n_past


# --- the fit ------------------------------------------------------------------------------------
@dataclass
class SpeedFit:
    """The fitted parameters and how well they reproduce every measurement."""

    fixed_ms: float  # per token, for Qwen3-8B's 36 layers
    h200_bandwidth_gb_s: dict[str, float]  # effective streaming rate of each measured type on the H200
    l4_bandwidth_gb_s: float  # every type on the L4 (measured for Q5_K_M)
    residuals: list[dict] = field(default_factory=list)

    @property
    def max_abs_residual(self) -> float:
        """The largest |predicted / measured - 1| over the points the fit did not set (the tests)."""
        return max(abs(r["residual"]) for r in self.residuals if not r["fitted"])

    def table(self) -> str:
        """Every recorded point against the model, as plain text. A point that set a streaming rate is
        reproduced by construction: its row says "fitted", not a residual, so it is not read as a test."""
        lines = [f"{'GPU':5s}{'type':8s}{'model':24s}{'tool':21s}{'context':>8s}{'GB/token':>9s}"
                 f"{'measured':>10s}{'model':>8s}{'residual':>10s}"]
        for r in self.residuals:
            check = "fitted" if r["fitted"] else f"{r['residual']:+.1%}"
            lines.append(f"{r['gpu']:5s}{r['quant']:8s}{r['model']:24s}{r['tool']:21s}{r['n_past']:8.0f}"
                         f"{r['bytes_per_token'] / 1e9:9.2f}{r['measured']:10.1f}{r['predicted']:8.1f}"
                         f"{check:>10s}")
        return "\n".join(lines)


@functools.cache
def _parameters() -> SpeedFit:
    """The fitted parameters alone (no residuals): what every prediction uses."""
    qwen, narrow = _measured("H200", "Q5_K_M", "llama-bench tg128"), _measured(
        "H200", "Q5_K_M", "llama-bench tg128", NARROW_TWIN)
    pair = decode_time_model(qwen.bytes_per_token, qwen.tokens_per_s, narrow.bytes_per_token, narrow.tokens_per_s)
    fixed_s = pair["fixed_ms"] / 1e3
    h200 = {m.quant: m.bytes_per_token / (1 / m.tokens_per_s - fixed_s) / 1e9
            for m in measurements() if m.gpu == "H200" and m.tool == "llama-batched-bench"}
    l4 = _measured("L4", "Q5_K_M")
    return SpeedFit(pair["fixed_ms"], h200, l4.bytes_per_token / (1 / l4.tokens_per_s - fixed_s) / 1e9)


@functools.cache
def fit() -> SpeedFit:
    """Fit the model's parameters from :func:`measurements`, and compare it with every one of them.

    * ``fixed_ms`` from the same-graph pair (llama-bench: Qwen3-8B and its narrow twin, Q5_K_M);
    * each H200 type's streaming rate from its llama-batched-bench point: bytes ÷ (time − fixed);
    * the L4's from the article's point the same way.

    Each rate is set by one point, so those five points are reproduced exactly (``"fitted": True``);
    the residuals that test the model are the two llama-bench points, predicted from the Q5_K_M rate
    of the other tool (their *difference* set the fixed part, their level did not).
    """
    residuals = []
    for m in measurements():
        predicted = expected_decode_tps(m.shape, m.quant, m.gpu, n_past=m.n_past)
        residuals.append({"gpu": m.gpu, "quant": m.quant, "model": m.model, "tool": m.tool,
                          "n_past": m.n_past, "bytes_per_token": m.bytes_per_token,
                          "measured": m.tokens_per_s, "predicted": predicted,
                          "residual": predicted / m.tokens_per_s - 1, "fitted": m.tool != "llama-bench tg128"})
    return replace(_parameters(), residuals=residuals)


def one_bandwidth_fit() -> dict:
    """The straight line time = fixed + bytes ÷ bandwidth through the H200's four types (least squares).

    If the types shared one streaming rate, this would fit; it does not: its bandwidth exceeds
    the H200's datasheet peak and it misses the points by up to 10%. Returned for display:
    ``fixed_ms``, ``bandwidth_gb_s`` and one residual (predicted / measured − 1) per type.
    """
    points = [(m.quant, m.bytes_per_token, 1 / m.tokens_per_s) for m in measurements()
              if m.gpu == "H200" and m.tool == "llama-batched-bench"]
    n = len(points)
    mx = sum(b for _, b, _ in points) / n
    my = sum(t for _, _, t in points) / n
    slope = sum((b - mx) * (t - my) for _, b, t in points) / sum((b - mx) ** 2 for _, b, _ in points)
    fixed = my - slope * mx
    residuals = {q: 1 / (fixed + slope * b) / (1 / t) - 1 for q, b, t in points}
    return {"fixed_ms": fixed * 1e3, "bandwidth_gb_s": 1 / slope / 1e9, "residuals": residuals}


# --- the prediction -----------------------------------------------------------------------------
def _family(quant: str) -> str:
    q = quant.upper()
    if q in ("F32", "F16", "BF16"):
        return "float"
    return "k" if "_K" in q or q.startswith("IQ") else "legacy"


def h200_proxy(quant: str) -> str:
    """The measured H200 type whose streaming rate an unmeasured type borrows: the same family
    (K-quants and IQ types / the older ``_0``, ``_1`` types / floats, which unpack least and so
    borrow Q8_0's), nearest in bits per weight. A measured type is its own proxy."""
    from helpers.quant import bits_per_weight

    measured = list(_parameters().h200_bandwidth_gb_s)
    q = quant.upper()
    if q in measured:
        return q
    family = _family(q)
    same = [m for m in measured if _family(m) == family] or (["Q8_0"] if "Q8_0" in measured else measured)
    bpw = bits_per_weight(QWEN3_8B, q)
    return min(same, key=lambda m: abs(bits_per_weight(QWEN3_8B, m) - bpw))


def streaming_fraction(gpu: str, quant: str) -> float:
    """The share of ``gpu``'s datasheet bandwidth at which ``quant``'s weights stream.

    L4: the article's Q5_K_M fraction, for every type (memory-bound there, see the module).
    H200: the type's measured fraction, or its :func:`h200_proxy`'s. Any other GPU: log-linear
    in bandwidth between the two, per type — an interpolation between the L4 and the H200, an
    extrapolation beyond them.
    """
    f = _parameters()
    spec = gpu_spec(gpu)
    b_l4, b_h200 = GPUS["L4"].bandwidth_gb_s, GPUS["H200"].bandwidth_gb_s
    e_l4 = f.l4_bandwidth_gb_s / b_l4
    e_h200 = f.h200_bandwidth_gb_s[h200_proxy(quant)] / b_h200
    if spec.name == "L4":
        return e_l4
    if spec.name == "H200":
        return e_h200
    slope = math.log(e_h200 / e_l4) / math.log(b_h200 / b_l4)
    return min(1.0, e_l4 * (spec.bandwidth_gb_s / b_l4) ** slope)


def fixed_ms(shape: ModelShape = QWEN3_8B) -> float:
    """The fixed part of a token's time: measured for Qwen3-8B's 36 layers, scaled by the layer count
    (the graph has ~35 nodes per layer). Assumed the same on every GPU."""
    return _parameters().fixed_ms * shape.n_layer / QWEN3_8B.n_layer


def expected_decode_tps(shape: ModelShape, quant: str, gpu: str, n_past: float | None = None) -> float:
    """Batch-1 decode speed (tokens/s) from the model: 1 ÷ (fixed + bytes ÷ effective bandwidth).

    ``n_past`` is the average context while generating (default :func:`reference_context`, ~160
    tokens: a short prompt and a few hundred tokens of answer). Whether a figure is measured or
    predicted: :func:`speed_label`.
    """
    n_past = reference_context() if n_past is None else n_past
    bandwidth = streaming_fraction(gpu, quant) * gpu_spec(gpu).bandwidth_gb_s * 1e9
    return 1 / (fixed_ms(shape) / 1e3 + bytes_per_token(shape, quant, n_past) / bandwidth)


def time_split(gpu: str, quant: str = "Q5_K_M", shape: ModelShape = QWEN3_8B, n_past: float | None = None) -> dict:
    """Where the model's time per token goes, in ms: ``roofline`` (the bytes at the datasheet rate),
    ``fixed``, and ``slow_streaming`` (the extra time because the weights stream below the datasheet
    rate); the three add up to ``model``. Both causes of a gap to the roofline, side by side."""
    n_past = reference_context() if n_past is None else n_past
    read = bytes_per_token(shape, quant, n_past)
    peak = gpu_spec(gpu).bandwidth_gb_s * 1e9
    roofline, stream = read / peak * 1e3, read / (streaming_fraction(gpu, quant) * peak) * 1e3
    fixed = fixed_ms(shape)
    return {"roofline": roofline, "fixed": fixed, "slow_streaming": stream - roofline, "model": fixed + stream}


def decode_efficiency(gpu: str, quant: str = "Q5_K_M", shape: ModelShape = QWEN3_8B) -> float:
    """The model's speed as a fraction of the roofline (empty context): 75% on the L4, ~27% on the H200."""
    return expected_decode_tps(shape, quant, gpu) / decode_roofline(shape, quant, gpu)


def is_measured(gpu: str, quant: str, shape: ModelShape = QWEN3_8B) -> bool:
    """Whether a batch-1 speed of ``shape`` in ``quant`` on ``gpu`` was measured (see :func:`measurements`)."""
    return _measured(gpu_spec(gpu).name, quant.upper(), shape=shape) is not None


def measured_tps(gpu: str, quant: str, shape: ModelShape = QWEN3_8B) -> float | None:
    """The recorded batch-1 speed of ``shape`` in ``quant`` on ``gpu`` (the one :func:`speed_label` cites),
    or None. A table of measured speeds should print this, not the model's value at another context."""
    m = _measured(gpu_spec(gpu).name, quant.upper(), shape=shape)
    return None if m is None else m.tokens_per_s


def speed_label(gpu: str, quant: str, shape: ModelShape = QWEN3_8B) -> str:
    """"measured (…)" or "predicted (…)" for :func:`expected_decode_tps` of ``gpu`` and ``quant``, the
    source in words — to print beside every speed, so that no prediction passes for a measurement."""
    name, q = gpu_spec(gpu).name, quant.upper()
    m = _measured(name, q, shape=shape)
    if m is not None:
        return f"measured ({m.source}, {m.tool}, {m.tokens_per_s:g} tok/s)"
    if name == "L4":
        return "predicted (the L4's streaming rate from the article's Q5_K_M run, the fixed part from the H200)"
    if name == "H200":
        proxy = h200_proxy(q)
        if proxy == q:  # measured for Qwen3-8B, this is another shape
            return f"predicted (the H200's measured {q} streaming rate applied to this model's bytes)"
        return f"predicted (the H200's measured streaming rate of {proxy}, the nearest measured type)"
    inside = GPUS["L4"].bandwidth_gb_s <= gpu_spec(gpu).bandwidth_gb_s <= GPUS["H200"].bandwidth_gb_s
    how = "interpolated by bandwidth between" if inside else "extrapolated by bandwidth beyond"
    return f"predicted (streaming rate {how} the measured L4 and H200)"
