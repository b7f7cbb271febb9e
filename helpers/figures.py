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

# --- request path (notebook 05) -------------------------------------------------------------

# --- roofline (notebooks 04 and 06) -----------------------------------------------------------
