"""A long-lived llama-server on a Modal GPU, behind an HTTPS endpoint with an API key.

    modal secret create llamacpp-api-key LLAMA_API_KEY=$(python -c "import secrets; print(secrets.token_urlsafe(24))")
    modal run -m helpers.modal_download        # once: put the model in the volume (CPU container)
    modal deploy -m helpers.modal_server       # the endpoint stays up; containers scale to zero
    modal app stop --yes llamacpp-server       # teardown

``serve`` starts llama-server and returns; ``@modal.web_server`` forwards HTTPS traffic to its
port, and ``@modal.concurrent`` lets one container take many requests at once (llama-server
batches them across its slots). While the model loads, ``/health`` answers 503 — clients
wait with :func:`helpers.client.wait_until_ready`. If llama-server dies later (out of memory,
a broken file), a watchdog stops the container, so Modal starts a fresh one instead of
routing requests to a dead port until the container scales down — which, with
``min_containers=1``, would be never.

Cost: nothing while no container runs. A container runs from the first request until
``scaledown_window`` idle seconds after the last one (5 minutes by default), billed by the
second — about $0.80 an hour on an L4. ``min_containers=1`` keeps one warm, and billed, all day.

The GPU, the model, warm containers and scale-down come from the deploy settings
(:mod:`helpers.modal_settings`); the llama-server flags from :mod:`helpers.server_config`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import modal

from helpers import config, llamacpp, process
from helpers.commands import ServerSettings, server_args, server_env
from helpers.modal_common import MINUTES, SETTINGS, find_model_file, inference_image, model_volume
from helpers.server_config import course_server_settings

#: llama-server's port inside the container; ``@modal.web_server`` forwards HTTPS to it.
PORT = 8080
#: Requests one container accepts at once. Beyond the 8 slots they queue inside llama-server
#: (their time to first token grows, see docs/benchmarks.md) instead of starting a second GPU;
#: only more than 32 at once make Modal start another container.
MAX_INPUTS = 32
#: Loading 6 GB from the volume into GPU memory takes well under a minute; ten leave room
#: for a cold volume and a bigger model.
STARTUP_TIMEOUT_S = 10 * MINUTES

app = modal.App(config.MODAL_SERVER_APP)

#: The API key reaches llama-server from this Secret — unless you deploy a public demo.
secrets = [] if SETTINGS.public else [
    modal.Secret.from_name(config.API_KEY_SECRET, required_keys=[config.API_KEY_ENV])]


def container_settings(model_path: str, api_key: str | None, port: int = PORT, host: str = "0.0.0.0"
                       ) -> ServerSettings:
    """The llama-server settings ``serve`` uses: the course's, on every interface of the container."""
    return course_server_settings(model_path, api_key, host=host, port=port,
                                  backend_sampling=SETTINGS.backend_sampling)


def llama_server_command(model_path: str, api_key: str | None = None) -> list[str]:
    """Exactly what ``serve`` runs in the container (the key travels in the environment)."""
    return server_args(Path(llamacpp.IMAGE_BIN_DIR) / "llama-server", container_settings(model_path, api_key))


def _stop_container(returncode: int | None) -> None:
    print(f"llama-server exited with {process.describe_exit(returncode)}; stopping this container so that "
          "Modal replaces it", flush=True)
    os._exit(1)


def start_llama_server(model_dir: str = config.MODEL_DIR, *, port: int = PORT, host: str = "0.0.0.0",
                       on_exit: Callable[[int | None], None] = _stop_container) -> subprocess.Popen:
    """Check the key, find the model in the volume, start llama-server and watch it.

    This is the body of ``serve``; as a plain function it also runs outside a container
    (``host="127.0.0.1"`` keeps it off the network there).
    """
    api_key = os.environ.get(config.API_KEY_ENV)
    if not api_key and not SETTINGS.public:
        raise RuntimeError(f"no {config.API_KEY_ENV}: create the '{config.API_KEY_SECRET}' secret (see the module "
                           "docstring) or deploy with LLAMACPP_COURSE_PUBLIC=1 to serve without a key")
    model_path = find_model_file(model_dir, SETTINGS.repo, SETTINGS.quant)
    settings = container_settings(model_path, api_key, port, host)
    # Output goes to the container log (modal app logs llamacpp-server).
    proc = process.spawn(server_args(llamacpp.binary("llama-server"), settings), env=server_env(settings),
                         stdout=None, stderr=None)
    process.watch(proc, on_exit)
    return proc


# The timeout is Modal's maximum, a day, so that it never cuts the server short; what stops an
# idle container is scaledown_window, and min_containers > 0 keeps that many running anyway.
@app.function(image=inference_image(), gpu=SETTINGS.gpu.spec, volumes={config.MODEL_DIR: model_volume},
              secrets=secrets, timeout=24 * 60 * MINUTES, scaledown_window=SETTINGS.scaledown_s,
              min_containers=SETTINGS.min_containers)
@modal.concurrent(max_inputs=MAX_INPUTS)
@modal.web_server(port=PORT, startup_timeout=STARTUP_TIMEOUT_S)
def serve() -> None:
    """Runs once per container: start llama-server and return; Modal then forwards requests to ``PORT``."""
    start_llama_server()


# --- the client side (your laptop or notebook) ----------------------------------------
def endpoint_url() -> str:
    """HTTPS address of the deployed server (also the llama.cpp web UI's address)."""
    return modal.Function.from_name(config.MODAL_SERVER_APP, "serve").get_web_url()


def stop_command() -> list[str]:
    """``modal app stop --yes llamacpp-server``: ``--yes`` because a notebook has no terminal to confirm in."""
    return ["modal", "app", "stop", "--yes", config.MODAL_SERVER_APP]


def stop_app() -> str:
    """Stop every container of the deployed server and remove its endpoint."""
    proc = subprocess.run(stop_command(), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"modal app stop failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip() or f"{config.MODAL_SERVER_APP} stopped"

