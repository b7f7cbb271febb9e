"""The course's llama-server configuration — one place, used by the Modal server and the local one.

The values come from the GPU measurements in docs/benchmarks.md (synthetic Qwen3-8B Q5_K_M,
the course's llama.cpp build, an NVIDIA H200) and from the L4's memory:

* 8 slots (``--parallel 8``): at 8 simultaneous streams every configuration ran at either
  ~60 or ~99 tok/s per stream, run to run, so the slot count did not decide the speed; it
  decides how much context each conversation gets: the same 65,536-token cache, which fits the
  L4, gives 8 slots 8,192 tokens each and 32 slots only 2,048. Requests beyond the slots queue
  (their time to first token grows).
* 8,192 tokens per slot: ``--ctx-size`` is the *total* shared by the slots, so we pass
  8 x 8,192 = 65,536 tokens of KV cache, 9 GiB; with the weights the L4 holds ~14.6 of 22 GiB
  (helpers.memory), room for long conversations.
* ``--backend-sampling`` (llama.cpp marks it experimental) picks the next token on the GPU
  instead of the CPU: one stream at 91-93% instead of 87-90% of llama-bench's decode speed, and
  +20-60% throughput at 16-32 streams. On a CPU-only build it changes nothing.
* Flash attention on: faster decode (246 vs 214 tok/s in llama-bench) and a compute buffer
  that does not grow with the context.
* ``--cache-ram 0``: by default llama-server copies idle slots' KV caches to host memory when a
  new request arrives, so that a conversation whose slot was reused can come back; in bursts of
  requests that doubled the time to first token at 8 and 32 streams (docs/benchmarks.md, "The
  server against its engine"). On a GPU, computing a returning conversation's prompt again is
  quicker (thousands of tokens per second) than that copy in every burst.
* ``--metrics``: Prometheus counters at ``/metrics`` (tokens generated, prompts processed, requests
  waiting), which ``python -m helpers bench`` checks its own counts against; no measurable cost.

**Several models behind one address** (llama-server's router mode, :func:`course_router_settings`)
uses the same settings for *each* model it loads: the router passes its arguments on to every
model's own llama-server. Each loaded model therefore has its own 65,536-token cache — which is
why, on an L4, only one Qwen3-8B Q5_K_M fits at a time with these settings, and the router's
``--models-max`` decides how many stay loaded (:mod:`helpers.multimodel` does the sums).
"""

from __future__ import annotations

from typing import Any

from helpers.commands import RouterSettings, ServerSettings

PARALLEL = 8
CTX_PER_SLOT = 8192
FLASH_ATTN = "on"
#: The name clients send as ``model`` (llama-server would otherwise use the file name).
MODEL_ALIAS = "qwen3-8b"
BACKEND_SAMPLING_ARGS = ("--backend-sampling",)
#: Flags every course server gets (reasons in the module docstring).
SERVER_ARGS = ("--cache-ram", "0", "--metrics")
#: Router mode: models loaded at once. Two, so that switching between two models costs no reload; the
#: least recently used one is unloaded when a third is asked for. Check that they fit with
#: :func:`helpers.multimodel.share_gpu` first (two Qwen3-8B with the settings above need an L40S or larger).
ROUTER_MODELS_MAX = 2


def course_server_settings(model_path: str, api_key: str | None, *, host: str = "127.0.0.1", port: int = 8080,
                           backend_sampling: bool = True, **overrides: Any) -> ServerSettings:
    """The llama-server settings the course deploys; ``overrides`` change single fields."""
    values: dict[str, Any] = {"parallel": PARALLEL, "ctx_per_slot": CTX_PER_SLOT, "flash_attn": FLASH_ATTN,
                              "alias": MODEL_ALIAS,
                              "extra_args": SERVER_ARGS + (BACKEND_SAMPLING_ARGS if backend_sampling else ())}
    values.update(overrides)
    return ServerSettings(model=model_path, host=host, port=port, api_key=api_key, **values)


def course_router_settings(models_dir: str, api_key: str | None, *, host: str = "127.0.0.1", port: int = 8080,
                           models_max: int = ROUTER_MODELS_MAX, backend_sampling: bool = True,
                           **overrides: Any) -> RouterSettings:
    """The course's settings for a router over the GGUF files in ``models_dir``; each model gets them.

    The same slots, context per slot, flash attention and sampling as :func:`course_server_settings`,
    so a model answers the same whether it is served alone or behind the router. There is no
    alias: the router names each model after its file (``qwen3-8b.gguf`` is ``qwen3-8b``).
    """
    values: dict[str, Any] = {"parallel": PARALLEL, "ctx_per_slot": CTX_PER_SLOT, "flash_attn": FLASH_ATTN,
                              "extra_args": SERVER_ARGS + (BACKEND_SAMPLING_ARGS if backend_sampling else ())}
    values.update(overrides)
    return RouterSettings(models_dir=models_dir, host=host, port=port, api_key=api_key, models_max=models_max,
                          **values)
