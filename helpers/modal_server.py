"""A long-lived llama-server on a Modal GPU, behind an HTTPS endpoint with an API key.

    modal secret create llamacpp-api-key LLAMA_API_KEY=$(python -c "import secrets; print(secrets.token_urlsafe(24))")
    modal run -m helpers.modal_server           # once: put the model in the volume
    modal deploy -m helpers.modal_server        # the endpoint stays up; containers scale to zero
    modal app stop llamacpp-server              # teardown

``serve`` starts llama-server and returns; ``@modal.web_server`` forwards HTTPS traffic to its
port, and ``@modal.concurrent`` lets one container take many requests at once (llama-server
batches them across its slots). While the model loads, ``/health`` answers 503 — clients
wait with :func:`helpers.client.wait_until_ready`.

Settings you can change at deploy time (environment variables on *your* machine):
``LLAMACPP_COURSE_GPU`` (L4), ``LLAMACPP_COURSE_REPO`` / ``LLAMACPP_COURSE_QUANT`` (the model),
``LLAMACPP_COURSE_MIN_CONTAINERS`` (0 = scale to zero; 1 keeps one warm, and billed),
``LLAMACPP_COURSE_SCALEDOWN`` (seconds a container idles before it stops), and
``LLAMACPP_COURSE_PUBLIC=1`` to serve *without* an API key (anyone with the URL can use
your GPU — only for throwaway demos).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import modal

from helpers import config, llamacpp
from helpers.commands import ServerSettings, server_args, server_env
from helpers.modal_common import MINUTES, download_model_file, find_model_file, inference_image, model_volume
from helpers.modal_common import app as common_app

GPU = config.modal_gpu()
REPO = os.environ.get("LLAMACPP_COURSE_REPO", config.DEFAULT_HF_REPO)
QUANT = os.environ.get("LLAMACPP_COURSE_QUANT", config.DEFAULT_QUANT)
PUBLIC = os.environ.get("LLAMACPP_COURSE_PUBLIC") == "1"
MIN_CONTAINERS = config.env_int("LLAMACPP_COURSE_MIN_CONTAINERS", 0)
SCALEDOWN_S = config.env_int("LLAMACPP_COURSE_SCALEDOWN", 5 * MINUTES)
PORT = 8080

#: Server settings, chosen from the H200 measurements in docs/benchmarks.md (synthetic
#: Qwen3-8B Q5_K_M, same llama.cpp build):
#: * 8 slots with backend sampling gave the best throughput up to 8 simultaneous streams
#:   (652 tok/s median, 3.2x one stream); 32 slots only win beyond 16 streams, and on the
#:   L4's 22 GiB they would leave ~2,000 tokens of context each.
#: * --backend-sampling (llama.cpp marks it experimental) samples on the GPU instead of the
#:   CPU: +20-60% aggregate throughput at 16-32 streams and ~92% instead of ~85% of
#:   llama-bench's single-stream speed. LLAMACPP_COURSE_BACKEND_SAMPLING=0 turns it off.
#: * 8,192 tokens per slot: 8 x 8,192 = 65,536 tokens of KV cache, 9 GiB; with the weights
#:   the L4 holds ~14.6 of 22 GiB (helpers.memory), room for long conversations.
#: * Flash attention on: faster decode (246 vs 214 tok/s in llama-bench) and a compute
#:   buffer that does not grow with the context.
#: * @modal.concurrent(32): requests beyond the 8 slots queue inside llama-server (their
#:   time to first token grows, see the benchmarks) instead of starting a second GPU.
PARALLEL = 8
CTX_PER_SLOT = 8192
FLASH_ATTN = "on"
BACKEND_SAMPLING = os.environ.get("LLAMACPP_COURSE_BACKEND_SAMPLING", "1") != "0"
MAX_INPUTS = 32
MODEL_ALIAS = "qwen3-8b"


def server_settings(model_path: str, api_key: str | None, host: str = "0.0.0.0", port: int = PORT,
                    **overrides: Any) -> ServerSettings:
    """The settings ``serve`` uses; the local backend builds its server from the same function."""
    values = {"parallel": PARALLEL, "ctx_per_slot": CTX_PER_SLOT, "flash_attn": FLASH_ATTN, "alias": MODEL_ALIAS,
              "extra_args": ("--backend-sampling",) if BACKEND_SAMPLING else (), **overrides}
    return ServerSettings(model=model_path, host=host, port=port, api_key=api_key, **values)


def llama_server_command(model_path: str, api_key: str | None = None) -> list[str]:
    """Exactly what ``serve`` runs in the container."""
    return server_args(Path(llamacpp.IMAGE_BIN_DIR) / "llama-server", server_settings(model_path, api_key))


app = modal.App(config.MODAL_SERVER_APP)
app.include(common_app)

_image_env = {"LLAMACPP_COURSE_REPO": REPO, "LLAMACPP_COURSE_QUANT": QUANT,
              "LLAMACPP_COURSE_PUBLIC": "1" if PUBLIC else "0"}
_secrets = [] if PUBLIC else [modal.Secret.from_name(config.API_KEY_SECRET, required_keys=[config.API_KEY_ENV])]


@app.function(image=inference_image(GPU, _image_env), gpu=GPU, volumes={config.MODEL_DIR: model_volume},
              secrets=_secrets, timeout=24 * 60 * MINUTES, scaledown_window=SCALEDOWN_S,
              min_containers=MIN_CONTAINERS)
@modal.concurrent(max_inputs=MAX_INPUTS)
@modal.web_server(port=PORT, startup_timeout=10 * MINUTES)
def serve() -> None:
    from helpers import process

    api_key = os.environ.get(config.API_KEY_ENV)
    if not api_key and os.environ.get("LLAMACPP_COURSE_PUBLIC") != "1":
        raise RuntimeError(f"no {config.API_KEY_ENV}: create the '{config.API_KEY_SECRET}' secret (see the module "
                           "docstring) or deploy with LLAMACPP_COURSE_PUBLIC=1 to serve without a key")
    model_path = find_model_file(config.MODEL_DIR, os.environ["LLAMACPP_COURSE_REPO"],
                                 os.environ["LLAMACPP_COURSE_QUANT"])
    settings = server_settings(model_path, api_key)
    # Output goes to the container log (modal app logs llamacpp-server).
    process.spawn(server_args(llamacpp.binary("llama-server"), settings), env=server_env(settings),
                  stdout=None, stderr=None)


@app.local_entrypoint()
def main(model: str = REPO, quant: str = QUANT) -> None:
    """Make sure the model is in the volume, then say how to deploy."""
    path = download_model_file.remote(model, quant)
    print(f"{config.MODEL_VOLUME}:/{path} is ready.")
    if (model, quant) != (REPO, QUANT):
        print(f"Deploy with: LLAMACPP_COURSE_REPO={model} LLAMACPP_COURSE_QUANT={quant} "
              "modal deploy -m helpers.modal_server")
    else:
        print("Deploy with: modal deploy -m helpers.modal_server")


# --- the client side (your laptop or notebook) ----------------------------------------
def endpoint_url() -> str:
    """HTTPS address of the deployed server (also the llama.cpp web UI's address)."""
    return modal.Function.from_name(config.MODAL_SERVER_APP, "serve").get_web_url()


def api_key() -> str | None:
    """Your copy of the key: $LLAMA_API_KEY (the same value you put in the Modal secret)."""
    return os.environ.get(config.API_KEY_ENV)


def stop_app() -> str:
    """``modal app stop llamacpp-server``: stops every container and the endpoint."""
    proc = subprocess.run(["modal", "app", "stop", config.MODAL_SERVER_APP], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"modal app stop failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()
