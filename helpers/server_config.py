"""The course's llama-server configuration — one place, used by the Modal server and the local one.

The values come from the GPU measurements in docs/benchmarks.md (synthetic Qwen3-8B Q5_K_M,
the course's llama.cpp build):

* 8 slots with backend sampling gave the best throughput up to 8 simultaneous streams
  (652 tok/s median, 3.2x one stream); 32 slots only win beyond 16 streams, and on the L4's
  22 GiB they would leave ~2,000 tokens of context each.
* ``--backend-sampling`` (llama.cpp marks it experimental) samples on the GPU instead of the
  CPU: +20-60% aggregate throughput at 16-32 streams and ~92% instead of ~85% of llama-bench's
  single-stream speed. On a CPU-only build it changes nothing.
* 8,192 tokens per slot: 8 x 8,192 = 65,536 tokens of KV cache, 9 GiB; with the weights the
  L4 holds ~14.6 of 22 GiB (helpers.memory), room for long conversations.
* Flash attention on: faster decode (246 vs 214 tok/s in llama-bench) and a compute buffer
  that does not grow with the context.
"""

from __future__ import annotations

from typing import Any

from helpers.commands import ServerSettings

PARALLEL = 8
CTX_PER_SLOT = 8192
FLASH_ATTN = "on"
#: The name clients send as ``model`` (llama-server would otherwise use the file name).
MODEL_ALIAS = "qwen3-8b"
BACKEND_SAMPLING_ARGS = ("--backend-sampling",)


def course_server_settings(model_path: str, api_key: str | None, *, host: str = "127.0.0.1", port: int = 8080,
                           backend_sampling: bool = True, **overrides: Any) -> ServerSettings:
    """The llama-server settings the course deploys; ``overrides`` change single fields."""
    values: dict[str, Any] = {"parallel": PARALLEL, "ctx_per_slot": CTX_PER_SLOT, "flash_attn": FLASH_ATTN,
                              "alias": MODEL_ALIAS, "extra_args": BACKEND_SAMPLING_ARGS if backend_sampling else ()}
    values.update(overrides)
    return ServerSettings(model=model_path, host=host, port=port, api_key=api_key, **values)
