"""The course's pictures, drawn from the course's own numbers.

A learner would rather look than read for three things: how a GPU's memory is shared out
(weights, KV cache, compute buffer, what is left), which way a request travels (client → Modal's
proxy → a container → llama-server's slots), and where measured speeds sit under the memory
bandwidth's limit. Each function here draws one of them with matplotlib from the same helpers the
notebooks print numbers with, and returns the ``Figure`` — so a notebook shows it, a test checks
what it drew, and nothing in a picture is typed in by hand.
"""

from __future__ import annotations

# --- memory layout (notebook 01) ------------------------------------------------------------

#: The parts of a GPU's memory, bottom to top, as :func:`memory_segments` names them, with their colours.
MEMORY_PARTS = ("model weights", "KV cache", "compute buffer", "CUDA overhead", "free")
_PART_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#8c8c8c", "#e8e8e8")


def memory_segments(est) -> dict[str, float]:
    """The GPU part of a :class:`helpers.memory.MemoryEstimate` as the figure's segments, in MiB.

    "free" is what the card has left (0 when the model does not fit: the bar then runs past the card's
    capacity, which is the point). Kept apart from the drawing so a test and a notebook can print the
    very numbers the bars are drawn from.
    """
    if est.gpu is None:
        raise ValueError("this estimate is for a CPU (gpu=None); the memory layout shows a GPU's memory: pass gpu='L4'")
    return {"model weights": est.gpu_model_mib, "KV cache": est.context_mib, "compute buffer": est.compute_mib,
            "CUDA overhead": est.overhead_mib, "free": max(est.gpu_memory_mib - est.total_gpu_mib, 0.0)}


def memory_case_label(est) -> str:
    """``"L4, Q5_K_M, 4,096 tokens"``: what one bar of :func:`memory_layout` shows."""
    return f"{est.gpu}, {est.quant}, {est.n_ctx:,} tokens"


def memory_layout(cases, title: str = "What llama.cpp allocates on the GPU (predicted)"):
    """One stacked bar per case: weights, KV cache, compute buffer, CUDA's overhead and what is left free.

    ``cases`` are :class:`helpers.memory.MemoryEstimate` objects (``memory.memory_breakdown(...)``), so
    every segment is the calculator's number — the one that reproduces llama.cpp's own breakdown on the
    article's L4. Bars are in GiB on one scale, so a 15 GiB T4 looks smaller than a 22 GiB L4; a black
    tick marks each card's capacity, and a case that does not fit says so in red with what it would need.
    Returns the matplotlib ``Figure`` (each part is one bar container, labelled with its name).
    """
    import matplotlib.pyplot as plt

    cases = list(cases)
    if not cases:
        raise ValueError("no cases to draw; pass one or more memory.memory_breakdown(...) results")
    gib = 1024
    segments = [memory_segments(est) for est in cases]
    labels = [memory_case_label(est) for est in cases]
    fig, ax = plt.subplots(figsize=(9, 0.75 * len(cases) + 1.6))
    left = [0.0] * len(cases)
    for part, colour in zip(MEMORY_PARTS, _PART_COLOURS, strict=True):
        widths = [seg[part] / gib for seg in segments]
        ax.barh(labels, widths, left=left, color=colour, edgecolor="white", label=part)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, est in enumerate(cases):
        cap = est.gpu_memory_mib / gib
        ax.plot([cap, cap], [y - 0.42, y + 0.42], color="black", lw=2)
        if est.fits:
            note, colour = f"{est.total_gpu_mib / gib:.1f} of {cap:.1f} GiB", "black"
        else:
            note, colour = f"needs {est.total_gpu_mib / gib:.1f} of {cap:.1f} GiB: does not fit", "firebrick"
        ax.text(max(cap, est.total_gpu_mib / gib) + 0.3, y, note, va="center", fontsize=9, color=colour)
    ax.invert_yaxis()
    ax.set_xlim(0, max(max(e.gpu_memory_mib, e.total_gpu_mib) for e in cases) / gib * 1.45)
    ax.set_xlabel("GiB (black tick: the card's memory as CUDA reports it)")
    ax.set_title(title, pad=24)
    ax.legend(ncol=len(MEMORY_PARTS), loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


# --- request path (notebook 05) -------------------------------------------------------------

#: The stages of :func:`request_path`, in the order a request meets them.
REQUEST_STAGES = ("client", "Modal proxy", "container", "llama-server", "GPU")


def request_path_labels() -> dict[str, str]:
    """The text of each box of :func:`request_path`, from the settings the course deploys.

    Nothing is typed in: the port, ``max_inputs``, the idle window and the GPU come from the Modal
    server (:mod:`helpers.modal_server`, which reads the deploy settings), the slots and their
    context from :mod:`helpers.server_config`, and the GPU's memory from the calculator
    (:mod:`helpers.memory`) — so the picture changes when a setting does.
    """
    from helpers import config, memory, modal_server, server_config
    from helpers.model_shape import known_shape

    s = modal_server.SETTINGS
    n_ctx = server_config.PARALLEL * server_config.CTX_PER_SLOT
    gpu = s.gpu.type
    est = memory.memory_breakdown(known_shape("Qwen3-8B"), s.quant, n_ctx, gpu)
    gib = 1024
    count = f"{s.gpu.count} × " if s.gpu.count > 1 else ""
    return {
        "client": "client\nopenai SDK, web UI, curl\nHTTPS, API key in the\nAuthorization header",
        "Modal proxy": (f"Modal's HTTPS proxy\n+ input queue\nholds requests while\na container starts;\n"
                        f"> {modal_server.MAX_INPUTS} at once per container:\nstarts another"),
        "container": (f"container: autoscaled, {s.min_containers} kept warm, stops after {s.scaledown_s} s idle\n"
                      f"@modal.concurrent(max_inputs={modal_server.MAX_INPUTS})   "
                      f"@modal.web_server(port={modal_server.PORT})"),
        "llama-server": (f"llama-server\n{server_config.PARALLEL} slots × {server_config.CTX_PER_SLOT:,} tokens\n"
                         f"continuous batching:\none step, one token\nfor every busy slot;\n"
                         f"beyond {server_config.PARALLEL}: its queue\nkey: {config.API_KEY_ENV}"),
        "GPU": (f"GPU: {count}{gpu}\n{est.gpu_memory_mib / gib:.1f} GiB\nweights {est.gpu_model_mib / gib:.1f}\n"
                f"KV cache {est.context_mib / gib:.1f}\ncompute {est.compute_mib / gib:.1f} GiB\n"
                f"({s.quant}, predicted)"),
    }


def request_path(labels: dict[str, str] | None = None):
    """Which way a request travels: client → Modal's proxy → a container (llama-server's slots, the GPU).

    One box per stage (:data:`REQUEST_STAGES`), its text from :func:`request_path_labels`; the
    container is drawn as the frame around llama-server and the GPU it holds, and a second, faded
    frame stands for the containers Modal adds when more requests arrive at once than one takes.
    Returns the matplotlib ``Figure``; each stage's text is one of its axes' texts.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    labels = request_path_labels() if labels is None else labels
    missing = [stage for stage in REQUEST_STAGES if stage not in labels]
    if missing:
        raise ValueError(f"no label for {', '.join(missing)}; pass a label for each of {', '.join(REQUEST_STAGES)}")
    colours = {"client": "#e8e8e8", "Modal proxy": "#c7dcef", "container": "#eaf5e9", "llama-server": "#fbe3c8",
               "GPU": "#f3c9c9"}
    fig, ax = plt.subplots(figsize=(12, 4.4))
    ax.set_xlim(0, 10.8)
    ax.set_ylim(-0.4, 4.6)
    ax.axis("off")
    mid = 1.7
    boxes = {"client": (0.05, 0.5, 1.75, 2.4), "Modal proxy": (2.25, 0.5, 1.95, 2.4),
             "llama-server": (5.0, 0.35, 2.3, 2.7), "GPU": (7.95, 0.35, 2.3, 2.7)}
    frame = (4.65, 0.1, 5.85, 4.1)  # the container: x, y, width, height
    ax.add_patch(FancyBboxPatch((frame[0] + 0.16, frame[1] - 0.26), frame[2], frame[3], boxstyle="round,pad=0.03",
                                facecolor=colours["container"], edgecolor="#9a9a9a", alpha=0.5, linestyle="--"))
    ax.add_patch(FancyBboxPatch(frame[:2], frame[2], frame[3], boxstyle="round,pad=0.03",
                                facecolor=colours["container"], edgecolor="#2f6b2f"))
    ax.text(frame[0] + frame[2] / 2, frame[1] + frame[3] - 0.5, labels["container"], ha="center", va="center",
            fontsize=8.5, linespacing=1.3)
    for stage, (x, y, w, h) in boxes.items():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.03", facecolor=colours[stage],
                                    edgecolor="#333333"))
        ax.text(x + w / 2, y + h / 2, labels[stage], ha="center", va="center", fontsize=8, linespacing=1.3)
    ends = [(1.8, 2.25), (4.2, 5.0), (7.3, 7.95)]
    for left, right in ends:
        ax.add_patch(FancyArrowPatch((left + 0.03, mid), (right - 0.03, mid), arrowstyle="<|-|>", mutation_scale=13,
                                     color="#333333"))
    ax.text(0.05, 3.3, "request →\n← tokens stream back\n   (server-sent events)", fontsize=8.5, va="bottom")
    ax.text(frame[0] + 0.16 + frame[2] / 2, -0.36, "another container, when more requests arrive at once",
            ha="center", va="bottom", fontsize=7.5, color="#555555")
    ax.set_title("The request path on Modal (the course's settings)", fontsize=11)
    fig.tight_layout()
    return fig


# --- roofline (notebooks 04 and 06) -----------------------------------------------------------

#: The types :func:`roofline_figure` predicts, besides every measured point.
ROOFLINE_QUANTS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M")


def roofline_series(gpu: str, shape=None, quants=ROOFLINE_QUANTS) -> dict[str, list[tuple[float, float, str]]]:
    """The points :func:`roofline_figure` draws for one GPU, as (GB read per token, tokens/s, type) triples.

    ``"measured"``: every recorded batch-1 run on that GPU (:func:`helpers.speed.measurements`, at its own
    context); ``"predicted"``: the speed model for each of ``quants`` at :func:`helpers.speed.reference_context`.
    Kept apart from the drawing so a test and a notebook can print the numbers the markers sit on.
    """
    from helpers import speed
    from helpers.gpus import gpu_spec

    shape = speed.QWEN3_8B if shape is None else shape
    name = gpu_spec(gpu).name
    n_past = speed.reference_context()
    measured = [(m.bytes_per_token / 1e9, m.tokens_per_s, m.quant if m.shape == speed.QWEN3_8B else "narrow twin")
                for m in speed.measurements() if m.gpu == name]
    predicted = [(speed.bytes_per_token(shape, q, n_past) / 1e9, speed.expected_decode_tps(shape, q, name), q)
                 for q in quants]
    return {"measured": measured, "predicted": predicted}


def roofline_figure(gpus=("L4", "H200"), shape=None, quants=ROOFLINE_QUANTS,
                    title: str = "Batch-1 decode: measured points, the speed model and the roofline"):
    """Each GPU's roofline (bandwidth ÷ bytes per token), the speed model, and every measured point.

    Log-log axes: bytes read per token across, tokens/s up; a roofline is then a straight line of slope
    −1. Per GPU: the roofline (solid), the model with Q5_K_M's streaming rate (dashed: fixed + bytes ÷
    effective bandwidth, which bends away from the roofline where the fixed part dominates), the model's
    prediction for each of ``quants`` (hollow markers, labeled *predicted*) and the recorded runs
    (filled markers, labeled *measured*: the article's L4 run, the course's H200 runs). Every line
    carries a label naming the GPU and what it is, so a test can find it. Returns the ``Figure``.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from helpers import speed
    from helpers.gpus import gpu_spec

    shape = speed.QWEN3_8B if shape is None else shape
    n_past = speed.reference_context()
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    x = np.geomspace(0.3, 20, 120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, gpu in enumerate(gpus):
        spec, colour = gpu_spec(gpu), colours[i % len(colours)]
        ax.plot(x, spec.bandwidth_gb_s / x, color=colour, lw=1.5,
                label=f"{spec.name} roofline ({spec.bandwidth_gb_s:,.0f} GB/s)")
        rate = speed.streaming_fraction(spec.name, "Q5_K_M") * spec.bandwidth_gb_s
        fixed_s = speed.fixed_ms(shape) / 1e3
        ax.plot(x, 1 / (fixed_s + x / rate), color=colour, lw=1, ls="--",
                label=f"{spec.name} model: {fixed_s * 1e3:.2f} ms + bytes at {rate:,.0f} GB/s")
        series = roofline_series(spec.name, shape, quants)
        px, py, pq = zip(*series["predicted"], strict=True)
        ax.plot(px, py, ls="none", marker="o", mfc="white", mec=colour, ms=7, label=f"{spec.name} predicted (model)")
        if series["measured"]:
            mx, my, mq = zip(*series["measured"], strict=True)
            ax.plot(mx, my, ls="none", marker="o", color=colour, ms=6, label=f"{spec.name} measured")
            for bx, by, q in series["measured"]:
                ax.annotate(q, (bx, by), textcoords="offset points", xytext=(5, -10 if i else 5), fontsize=7,
                            color=colour)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"GB read per token (weights + KV cache at {n_past:.0f} tokens of context)")
    ax.set_ylabel("tokens/s, one stream")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig
