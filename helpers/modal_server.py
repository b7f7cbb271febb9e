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

Several models:

* **one deployment per model** — give each its own app name, so that a second deploy does not
  replace the first::

      LLAMACPP_COURSE_APP_NAME=llamacpp-qwen3-4b LLAMACPP_COURSE_REPO=Qwen/Qwen3-4B-GGUF \
          modal deploy -m helpers.modal_server       # a second endpoint, its own GPU and scaling
      modal app stop --yes llamacpp-qwen3-4b         # its teardown

* **every model of the volume on one GPU** — ``LLAMACPP_COURSE_ROUTER=1`` starts llama-server in
  router mode over every GGUF file in the volume: a request's ``model`` (the file's name,
  lower-case, without ``.gguf``: ``qwen3-8b-q5_k_m``) picks the model, which is loaded on first
  use. ``LLAMACPP_COURSE_MODELS_MAX`` caps how many stay loaded; at start the container lowers
  it to what the GPU holds (:func:`helpers.multimodel.cap_models_max`) and logs why.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import modal

from helpers import config, llamacpp, process
from helpers.commands import RouterSettings, ServerSettings, router_args, server_args, server_env
from helpers.modal_common import MINUTES, SETTINGS, find_model_file, inference_image, model_volume
from helpers.server_config import course_router_settings, course_server_settings

#: llama-server's port inside the container; ``@modal.web_server`` forwards HTTPS to it.
PORT = 8080
#: Requests one container accepts at once. Beyond the 8 slots they queue inside llama-server
#: (their time to first token grows, see docs/benchmarks.md) instead of starting a second GPU;
#: only more than 32 at once make Modal start another container.
MAX_INPUTS = 32
#: Loading 6 GB from the volume into GPU memory takes well under a minute; ten leave room
#: for a cold volume and a bigger model.
STARTUP_TIMEOUT_S = 10 * MINUTES
#: Router mode: the folder of links, one short name per model of the volume, on the container's own disk.
ROUTER_MODELS_DIR = "/tmp/llamacpp-course-models"

app = modal.App(SETTINGS.app_name)

#: The API key reaches llama-server from this Secret — unless you deploy a public demo.
secrets = [] if SETTINGS.public else [
    modal.Secret.from_name(config.API_KEY_SECRET, required_keys=[config.API_KEY_ENV])]


#: With memory snapshots (``LLAMACPP_COURSE_SNAPSHOT=1``) llama-server reads the weights into its own
#: memory instead of mapping the file on the Volume: a snapshot captures a process's memory, not the
#: pages of a Volume's file. (``--load-mode none`` is how the pinned llama.cpp spells ``--no-mmap``.)
SNAPSHOT_LOAD_MODE = "none"


def container_settings(model_path: str, api_key: str | None, port: int = PORT, host: str = "0.0.0.0"
                       ) -> ServerSettings:
    """The llama-server settings ``serve`` uses: the course's, on every interface of the container."""
    return course_server_settings(model_path, api_key, host=host, port=port,
                                  backend_sampling=SETTINGS.backend_sampling,
                                  load_mode=SNAPSHOT_LOAD_MODE if SETTINGS.snapshot else None)


def llama_server_command(model_path: str, api_key: str | None = None) -> list[str]:
    """Exactly what ``serve`` runs in the container (the key travels in the environment)."""
    return server_args(Path(llamacpp.IMAGE_BIN_DIR) / "llama-server", container_settings(model_path, api_key))


def container_router_settings(api_key: str | None, port: int = PORT, host: str = "0.0.0.0",
                              models_dir: str = ROUTER_MODELS_DIR) -> RouterSettings:
    """Router mode: the course's settings for every model, at most ``LLAMACPP_COURSE_MODELS_MAX`` loaded."""
    return course_router_settings(models_dir, api_key, host=host, port=port, models_max=SETTINGS.models_max,
                                  backend_sampling=SETTINGS.backend_sampling)


def llama_router_command(api_key: str | None = None) -> list[str]:
    """What ``serve`` runs in router mode (the container may lower ``--models-max``, see :func:`fit_router`)."""
    return router_args(Path(llamacpp.IMAGE_BIN_DIR) / "llama-server", container_router_settings(api_key))


def fit_router(model_dir: str, settings: RouterSettings, gpu: str) -> RouterSettings:
    """Link every model of the volume into ``settings.models_dir``, and lower ``models_max`` to what ``gpu`` holds.

    Each model's memory is predicted from its file's header (:mod:`helpers.multimodel`); a
    model whose header the calculator cannot read leaves the limit as it was — the prediction
    advises, it never stops the server.
    """
    from dataclasses import replace

    from helpers.hub import quant_label
    from helpers.multimodel import ModelInstance, cap_models_max
    from helpers.runtime import find_models, link_models

    models = find_models(model_dir)
    if not models:
        raise FileNotFoundError(f"no GGUF model in the '{config.MODEL_VOLUME}' volume yet. Download one first: "
                                f"modal run -m helpers.modal_download --model {SETTINGS.repo} --quant {SETTINGS.quant}")
    link_models(models, settings.models_dir)
    n_ctx = settings.parallel * settings.ctx_per_slot
    instances = [ModelInstance(str(parts[0]), quant_label(parts[0].name) or "GGUF", n_ctx=n_ctx)
                 for parts in models.values()]
    try:
        limit, why = cap_models_max(instances, gpu, settings.models_max)
    except Exception as exc:  # noqa: BLE001 - an unknown architecture or a damaged header: keep the setting
        limit, why = settings.models_max, f"models-max {settings.models_max} (memory not predicted: {exc})"
    print(f"router: {len(models)} models: {', '.join(models)}; {why}", flush=True)
    return replace(settings, models_max=limit)


def _stop_container(returncode: int | None) -> None:
    print(f"llama-server exited with {process.describe_exit(returncode)}; stopping this container so that "
          "Modal replaces it", flush=True)
    os._exit(1)


def start_llama_server(model_dir: str = config.MODEL_DIR, *, port: int = PORT, host: str = "0.0.0.0",
                       on_exit: Callable[[int | None], None] = _stop_container,
                       router_dir: str = ROUTER_MODELS_DIR) -> subprocess.Popen:
    """Check the key, find the model (or, in router mode, every model) in the volume, start llama-server, watch it.

    This is the body of ``serve``; as a plain function it also runs outside a container
    (``host="127.0.0.1"`` keeps it off the network there).
    """
    api_key = os.environ.get(config.API_KEY_ENV)
    if not api_key and not SETTINGS.public:
        raise RuntimeError(f"no {config.API_KEY_ENV}: create the '{config.API_KEY_SECRET}' secret (see the module "
                           "docstring) or deploy with LLAMACPP_COURSE_PUBLIC=1 to serve without a key")
    settings: ServerSettings | RouterSettings
    if SETTINGS.router:
        settings = fit_router(model_dir, container_router_settings(api_key, port, host, router_dir), SETTINGS.gpu.type)
        args = router_args(llamacpp.binary("llama-server"), settings)
    else:
        settings = container_settings(find_model_file(model_dir, SETTINGS.repo, SETTINGS.quant), api_key, port, host)
        args = server_args(llamacpp.binary("llama-server"), settings)
    # Output goes to the container log (modal app logs <app name>). A router's model instances are its
    # children, in its process group: the watchdog's stop ends them too.
    proc = process.spawn(args, env=server_env(settings), stdout=None, stderr=None)
    process.watch(proc, on_exit)
    return proc


def warm_up(proc: subprocess.Popen, port: int = PORT) -> None:
    """Wait until llama-server has loaded the model, then have it generate one token (kernels loaded, graphs built)."""
    import json
    import urllib.request

    from helpers.client import wait_until_ready

    base = f"http://127.0.0.1:{port}"
    api_key = os.environ.get(config.API_KEY_ENV)
    wait_until_ready(base, timeout_s=STARTUP_TIMEOUT_S, api_key=api_key, is_alive=lambda: proc.poll() is None)
    body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    with urllib.request.urlopen(urllib.request.Request(base + "/v1/chat/completions", body, headers), timeout=300):
        pass


# The timeout is Modal's maximum, a day, so that it never cuts the server short; what stops an
# idle container is scaledown_window, and min_containers > 0 keeps that many running anyway.
FUNCTION_OPTIONS = dict(image=inference_image(), gpu=SETTINGS.gpu.spec, volumes={config.MODEL_DIR: model_volume},
                        secrets=secrets, timeout=24 * 60 * MINUTES, scaledown_window=SETTINGS.scaledown_s,
                        min_containers=SETTINGS.min_containers)

if not SETTINGS.snapshot:
    @app.function(**FUNCTION_OPTIONS)
    @modal.concurrent(max_inputs=MAX_INPUTS)
    @modal.web_server(port=PORT, startup_timeout=STARTUP_TIMEOUT_S)
    def serve() -> None:
        """Runs once per container: start llama-server and return; Modal then forwards requests to ``PORT``."""
        start_llama_server()

else:
    # Memory snapshots: Modal runs ``load`` once, snapshots the container — CPU memory and, with the GPU
    # option (alpha), GPU memory — and later containers start from that snapshot instead of loading the
    # model again. A CPU-only snapshot could not help here: the weights live in GPU memory, which a CPU
    # snapshot does not capture. See docs/cold_starts.md.
    @app.cls(**FUNCTION_OPTIONS, enable_memory_snapshot=True, experimental_options={"enable_gpu_snapshot": True})
    @modal.concurrent(max_inputs=MAX_INPUTS)
    class Server:
        """``serve`` restored from a memory snapshot: a cold container skips loading the model."""

        @modal.enter(snap=True)
        def load(self) -> None:
            """Before the snapshot, once: llama-server started, the model loaded, one token generated."""
            self.proc = start_llama_server()
            warm_up(self.proc)

        @modal.web_server(port=PORT, startup_timeout=STARTUP_TIMEOUT_S)
        def serve(self) -> None:
            """In every container, restored or not, llama-server is already listening: nothing to start."""


# --- the client side (your laptop or notebook) ----------------------------------------
def endpoint_url() -> str:
    """HTTPS address of the deployed server (also the llama.cpp web UI's address)."""
    if SETTINGS.snapshot:
        return modal.Cls.from_name(SETTINGS.app_name, "Server")().serve.get_web_url()
    return modal.Function.from_name(SETTINGS.app_name, "serve").get_web_url()


def stop_command() -> list[str]:
    """``modal app stop --yes llamacpp-server`` (or ``$LLAMACPP_COURSE_APP_NAME``): ``--yes`` because a notebook
    has no terminal to confirm in."""
    return ["modal", "app", "stop", "--yes", SETTINGS.app_name]


def stop_app() -> str:
    """Stop every container of the deployed server and remove its endpoint."""
    proc = subprocess.run(stop_command(), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"modal app stop failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip() or f"{SETTINGS.app_name} stopped"

