"""How much a quantization changes what a model predicts: llama.cpp's published measurements.

Bits per weight and file size are easy to compute (:mod:`helpers.sizes`); what a format costs in
*quality* has to be measured on a real model with real text. llama.cpp's ``llama-perplexity``
does it: it runs the FP16 model over the Wikitext-2 test set, stores its probabilities for every
next token, then runs the quantized model over the same text and compares. Two numbers matter:

* **KL divergence** (KLD, in nats per token) — how far the quantized model's next-token
  distribution is from the FP16 model's, averaged over the text; 0 means identical. It sees
  every change, also the ones perplexity averages away, which makes it the better yardstick
  for quantization;
* **perplexity** (PPL) — how surprised the model is by the real next token; a quantized model's
  PPL divided by FP16's says how much worse it predicts text.

The numbers below are the *LLaMA 3 8b Scoreboard* in llama.cpp's own documentation
(``tools/perplexity/README.md`` — the copy in the course's pinned source; measured by the
llama.cpp developers at revision f364eb6f, CUDA backend, one RTX 4090), the rows made without an
importance matrix, as the Hub's common presets are. Llama 3 8B is a dense 8-billion-parameter
model like Qwen3-8B, quantized by the same recipes; Qwen3-8B's own figures are not published
there, so treat these as the typical size of each step, not Qwen3's exact values.
``tests/test_quality.py`` checks them against the pinned source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SOURCE = ("llama.cpp, tools/perplexity/README.md, \"LLaMA 3 8b Scoreboard\" (Wikitext-2 test set, "
          "FP16 baseline, no importance matrix)")


@dataclass(frozen=True)
class QuantQuality:
    """One preset's measured quality loss against FP16 (Llama 3 8B)."""

    preset: str
    size_gib: float
    ppl: float
    kld: float  # mean KL divergence, nats per token
    rms_dp_pct: float  # RMS change of the probability of the correct token, in percent


#: The scoreboard's rows without an importance matrix ("f16" is the baseline against its own
#: 16-bit-stored probabilities: the measurement's noise floor).
LLAMA3_8B: dict[str, QuantQuality] = {q.preset: q for q in (
    QuantQuality("F16", 14.97, 6.233160, 0.000551, 0.787),
    QuantQuality("Q8_0", 7.96, 6.234284, 0.001355, 1.198),
    QuantQuality("Q6_K", 6.14, 6.253382, 0.005452, 2.295),
    QuantQuality("Q5_K_M", 5.33, 6.288607, 0.010762, 3.160),
    QuantQuality("Q5_K_S", 5.21, 6.336598, 0.016595, 3.918),
    QuantQuality("Q5_1", 5.65, 6.337857, 0.018045, 4.123),
    QuantQuality("Q5_0", 5.21, 6.363224, 0.022239, 4.634),
    QuantQuality("Q4_K_M", 4.58, 6.407115, 0.031273, 5.519),
    QuantQuality("Q4_K_S", 4.37, 6.500529, 0.043136, 6.562),
    QuantQuality("Q4_1", 4.78, 6.682737, 0.071683, 8.512),
    QuantQuality("Q4_0", 4.34, 6.700147, 0.071940, 8.434),
    QuantQuality("Q3_K_L", 4.03, 6.787876, 0.087176, 9.432),
    QuantQuality("Q3_K_M", 3.74, 6.888498, 0.101913, 10.203),
    QuantQuality("Q3_K_S", 3.41, 7.863786, 0.228217, 15.541),
    QuantQuality("Q2_K", 2.96, 9.751568, 0.445132, 21.421),
)}


def ppl_ratio(preset: str) -> float:
    """Perplexity of ``preset`` relative to FP16: 1.009 means text is 0.9% "more surprising"."""
    return LLAMA3_8B[preset].ppl / LLAMA3_8B["F16"].ppl


def parse_scoreboard(markdown: str) -> dict[str, QuantQuality]:
    """The rows without an importance matrix from the scoreboard table in llama.cpp's perplexity README."""
    section = markdown.split("## LLaMA 3 8b Scoreboard", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, QuantQuality] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 8 or cells[1] != "None":
            continue
        number = re.compile(r"-?[0-9.]+")
        size, ppl, _, kld, _, rms = (float(number.match(c)[0]) for c in cells[2:])
        name = cells[0].upper()
        rows[name] = QuantQuality(name, size, ppl, kld, rms)
    return rows
