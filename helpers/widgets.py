"""An interactive memory calculator for the notebooks (ipywidgets + matplotlib).

The widget is a thin shell over :func:`helpers.memory.memory_breakdown`: it reads its
controls, calls the calculator, and shows a table and a stacked bar. Its state is plain
attributes, so tests drive it headless by setting ``.value`` on the controls.
"""

from __future__ import annotations

from typing import Any

from helpers.gpus import GPUS
from helpers.memory import KV_TYPES, MemoryEstimate, memory_breakdown
from helpers.model_shape import KNOWN_CONFIGS, known_shape
from helpers.quant import PRESETS

SEGMENTS = (("gpu_model_mib", "model weights"), ("context_mib", "KV cache"), ("compute_mib", "compute buffer"),
            ("overhead_mib", "CUDA overhead"))


def breakdown_rows(est: MemoryEstimate) -> list[tuple[str, float]]:
    """(label, MiB) rows for a table: what the GPU holds, then the host's share."""
    rows = [(label, getattr(est, key)) for key, label in SEGMENTS]
    rows += [("total on the GPU", est.total_gpu_mib), ("model kept on the host (token_embd)", est.host_model_mib)]
    if est.gpu_memory_mib is not None:
        rows.append((f"{est.gpu} memory", float(est.gpu_memory_mib)))
    return rows


def plot_breakdown(estimates: list[MemoryEstimate], labels: list[str] | None = None, ax: Any = None) -> Any:
    """Stacked bars of GPU memory (one bar per estimate) with each GPU's capacity marked."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    labels = labels or [f"{e.quant} @ {e.n_ctx:,}" for e in estimates]
    bottoms = [0.0] * len(estimates)
    for key, label in SEGMENTS:
        values = [getattr(e, key) / 1024 for e in estimates]
        ax.bar(labels, values, bottom=bottoms, label=label)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    for i, e in enumerate(estimates):
        if e.gpu_memory_mib:
            ax.hlines(e.gpu_memory_mib / 1024, i - 0.4, i + 0.4, colors="black", linestyles="dashed")
    ax.set_ylabel("GiB on the GPU")
    ax.legend(fontsize="small", loc="upper left")
    return ax


class MemoryCalculator:
    """Pick model, quantization, context, KV type and GPU; see what llama.cpp will allocate."""

    def __init__(self, model: str = "Qwen3-8B", quant: str = "Q5_K_M", n_ctx: int = 4096, kv_type: str = "f16",
                 gpu: str = "L4") -> None:
        import ipywidgets as w

        self.model = w.Dropdown(options=list(KNOWN_CONFIGS), value=model, description="model")
        self.quant = w.Dropdown(options=list(PRESETS), value=quant, description="quant")
        self.n_ctx = w.SelectionSlider(options=[2**k for k in range(9, 18)], value=n_ctx, description="context")
        self.kv_type = w.Dropdown(options=list(KV_TYPES), value=kv_type, description="KV cache")
        self.gpu = w.Dropdown(options=list(GPUS), value=gpu, description="GPU")
        self.table = w.HTML()
        self.plot = w.Output()
        self.result: MemoryEstimate | None = None
        for control in self.controls:
            control.observe(lambda _change: self.update(), names="value")
        self.widget = w.VBox([w.HBox([self.model, self.quant, self.gpu]), w.HBox([self.n_ctx, self.kv_type]),
                              w.HBox([self.table, self.plot])])
        self.update()

    @property
    def controls(self) -> list[Any]:
        return [self.model, self.quant, self.n_ctx, self.kv_type, self.gpu]

    def update(self) -> MemoryEstimate:
        self.result = memory_breakdown(known_shape(self.model.value), self.quant.value, self.n_ctx.value,
                                       self.gpu.value, kv_type=self.kv_type.value)
        verdict = "fits" if self.result.fits else f"does NOT fit (short by {-self.result.headroom_mib:,.0f} MiB)"
        rows = "".join(f"<tr><td>{label}</td><td style='text-align:right'>{mib:,.0f} MiB</td></tr>"
                       for label, mib in breakdown_rows(self.result))
        self.table.value = f"<table>{rows}</table><p><b>{verdict}</b></p>"
        self.plot.clear_output(wait=True)
        with self.plot:
            import matplotlib.pyplot as plt

            plot_breakdown([self.result])
            plt.show()
        return self.result

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
