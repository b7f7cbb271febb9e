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
llama.cpp developers at revision f364eb6f, CUDA backend, one RTX 4090): the rows made without an
importance matrix in :data:`LLAMA3_8B`, and the rows made with one (``WT 10m``: an importance matrix from
10 million tokens of Wikitext) in :data:`LLAMA3_8B_IMATRIX`. An importance matrix records which
weights the model's activations use most, so that ``llama-quantize --imatrix`` rounds those more
carefully; the file is the same size and runs at the same speed, and loses less (Q4_K_M: KLD
0.0282 with, 0.0313 without). Llama 3 8B is a dense 8-billion-parameter
model like Qwen3-8B, quantized by the same recipes; Qwen3-8B's own figures are not published
there, so treat these as the typical size of each step, not Qwen3's exact values.
``tests/test_quality.py`` checks them against the pinned source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SOURCE = ("llama.cpp, tools/perplexity/README.md, \"LLaMA 3 8b Scoreboard\" (Wikitext-2 test set, "
          "FP16 baseline, no importance matrix)")
SOURCE_URL = "https://github.com/ggml-org/llama.cpp/blob/master/tools/perplexity/README.md"
#: The importance matrix of the scoreboard's imatrix rows (every preset has one made with it).
IMATRIX = "WT 10m"
#: How the course names a preset quantized with an importance matrix (same bytes, same speed).
IMATRIX_SUFFIX = "+imatrix"


@dataclass(frozen=True)
class QuantQuality:
    """One preset's measured quality loss against FP16 (Llama 3 8B)."""

    preset: str
    size_gib: float
    ppl: float
    kld: float  # mean KL divergence, nats per token
    rms_dp_pct: float  # RMS change of the probability of the correct token, in percent
    imatrix: str | None = None  # the importance matrix it was made with, None: without one


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


#: The scoreboard's rows made with the ``WT 10m`` importance matrix (the K-quants below 5 bits and
#: the IQ types: where an importance matrix matters, which is where llama.cpp measured it).
LLAMA3_8B_IMATRIX: dict[str, QuantQuality] = {q.preset: q for q in (
    QuantQuality("Q4_K_M", 4.58, 6.382937, 0.028152, 5.251, IMATRIX),
    QuantQuality("Q4_K_S", 4.37, 6.409697, 0.031951, 5.645, IMATRIX),
    QuantQuality("IQ4_NL", 4.35, 6.455593, 0.035742, 5.998, IMATRIX),
    QuantQuality("IQ4_XS", 4.14, 6.459705, 0.036334, 6.044, IMATRIX),
    QuantQuality("Q3_K_L", 4.03, 6.671223, 0.073077, 8.662, IMATRIX),
    QuantQuality("Q3_K_M", 3.74, 6.734255, 0.084358, 9.292, IMATRIX),
    QuantQuality("IQ3_M", 3.53, 6.898327, 0.102534, 10.513, IMATRIX),
    QuantQuality("IQ3_S", 3.42, 6.965501, 0.111278, 10.845, IMATRIX),
    QuantQuality("IQ3_XS", 3.28, 7.163043, 0.138693, 12.148, IMATRIX),
    QuantQuality("IQ3_XXS", 3.05, 7.458436, 0.183625, 13.836, IMATRIX),
    QuantQuality("Q3_K_S", 3.41, 7.602878, 0.199821, 14.980, IMATRIX),
    QuantQuality("IQ2_M", 2.74, 8.600799, 0.325989, 18.519, IMATRIX),
    QuantQuality("Q2_K", 2.96, 8.647825, 0.332223, 18.881, IMATRIX),
    QuantQuality("Q2_K_S", 2.96, 9.323778, 0.403360, 20.050, IMATRIX),
    QuantQuality("IQ2_S", 2.56, 9.650781, 0.439197, 21.491, IMATRIX),
    QuantQuality("IQ2_XS", 2.43, 10.761424, 0.546290, 23.872, IMATRIX),
    QuantQuality("IQ2_XXS", 2.24, 14.091782, 0.812022, 28.576, IMATRIX),
    QuantQuality("IQ1_M", 2.01, 25.493722, 1.393084, 38.287, IMATRIX),
    QuantQuality("IQ1_S", 1.88, 60.694593, 2.254554, 46.271, IMATRIX),
)}


def lookup(name: str) -> QuantQuality:
    """The published figures of ``name``: a preset (``"Q4_K_M"``, made without an importance matrix) or
    the same preset made with one (``"Q4_K_M+imatrix"``); a one-line error lists what exists."""
    key = name.strip().upper().replace(IMATRIX_SUFFIX.upper(), IMATRIX_SUFFIX)
    if key.endswith(IMATRIX_SUFFIX) and key.removesuffix(IMATRIX_SUFFIX) in LLAMA3_8B_IMATRIX:
        return LLAMA3_8B_IMATRIX[key.removesuffix(IMATRIX_SUFFIX)]
    if key in LLAMA3_8B:
        return LLAMA3_8B[key]
    known = [*LLAMA3_8B, *(q + IMATRIX_SUFFIX for q in LLAMA3_8B_IMATRIX)]
    raise ValueError(f"no published quality figures for {name!r}; choose from {', '.join(known)}")


def base_preset(name: str) -> str:
    """The llama-quantize preset behind a name: ``"Q4_K_M+imatrix"`` -> ``"Q4_K_M"`` (same bytes, same speed)."""
    return name.strip().upper().replace(IMATRIX_SUFFIX.upper(), "")


def ppl_ratio(preset: str) -> float:
    """Perplexity of ``preset`` relative to FP16: 1.009 means text is 0.9% "more surprising"."""
    return lookup(preset).ppl / LLAMA3_8B["F16"].ppl


def parse_scoreboard(markdown: str, imatrix: str | None = None) -> dict[str, QuantQuality]:
    """The rows of the scoreboard table in llama.cpp's perplexity README made without an importance
    matrix (``imatrix=None``) or with the named one (e.g. ``"WT 10m"``)."""
    section = markdown.split("## LLaMA 3 8b Scoreboard", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, QuantQuality] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 8 or cells[1] != (imatrix or "None"):
            continue
        number = re.compile(r"-?[0-9.]+")
        size, ppl, _, kld, _, rms = (float(number.match(c)[0]) for c in cells[2:])
        name = cells[0].upper()
        rows[name] = QuantQuality(name, size, ppl, kld, rms, imatrix)
    return rows
