"""Modal or local? One switch, and backend-neutral functions for the notebooks.

The notebooks call :func:`run_inference` and :func:`start` (or :func:`serve`) without caring where they run:

* **modal** — when a Modal token is configured (``modal setup`` writes ``~/.modal.toml``, or
  ``MODAL_TOKEN_ID``/``MODAL_TOKEN_SECRET`` are set): the PoC functions and the deployed
  server on a cloud GPU, with the real Qwen3-8B from the Hub;
* **local** — otherwise: the same llama.cpp, command lines and parsers on this machine, with
  the offline synthetic model. Every cell of the course runs this way.

``$LLAMACPP_COURSE_BACKEND`` (``modal``/``local``) or a ``backend=`` argument overrides the guess.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import config

BACKENDS = ("local", "modal")
BACKEND_ENV = "LLAMACPP_COURSE_BACKEND"


def modal_token_configured() -> bool:
    """True if the Modal client would find credentials (environment or ~/.modal.toml)."""
    if os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET"):
        return True
    path = Path(os.environ.get("MODAL_CONFIG_PATH") or Path.home() / ".modal.toml")
    if not path.is_file():
        return False
    import tomllib

    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return any(isinstance(p, dict) and p.get("token_id") and p.get("token_secret") for p in profiles.values())


def choose_backend(requested: str | None = None) -> str:
    """``requested`` > ``$LLAMACPP_COURSE_BACKEND`` > Modal if a token is configured > local."""
    choice = (requested or os.environ.get(BACKEND_ENV) or "").strip().lower()
    if choice:
        if choice not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {choice!r}")
        if choice == "modal" and not modal_token_configured():
            raise RuntimeError("backend 'modal' was requested but no Modal token is configured: run `modal setup`")
        return choice
    return "modal" if modal_token_configured() else "local"


def describe(backend: str | None = None) -> str:
    """The one-line banner each notebook prints first."""
    from helpers import llamacpp

    b = choose_backend(backend)
    if b == "modal":
        from helpers.modal_settings import ModalSettings

        s = ModalSettings.from_env()
        return f"backend: modal (GPU {s.gpu.spec}, model {s.repo} {s.quant})"
    spec = llamacpp.BuildSpec.local()
    return (f"backend: local ({'CUDA' if spec.cuda else 'CPU'} build of llama.cpp {config.LLAMA_CPP_COMMIT[:7]}, "
            "SmolLM2-135M for text, the synthetic Qwen3 for Qwen3's shapes; set up Modal to run on a cloud GPU)")


#: The model the local backend runs where a learner reads what it writes: the real SmolLM2
#: (:mod:`helpers.models`). On Modal it is the deployed Qwen3-8B.
LOCAL_MODEL = "smollm2"


def run_inference(prompt: str, n_predict: int = 128, *, repo: str = config.DEFAULT_HF_REPO,
                  quant: str = config.DEFAULT_QUANT, extra_args: tuple[str, ...] = (), backend: str | None = None,
                  stream: bool = True, local_model: str = LOCAL_MODEL) -> dict[str, Any]:
    """The PoC: one non-interactive generation, stored as a result record; returns the record.

    On Modal: ``repo``/``quant`` on an L4. Locally: ``local_model`` (a name or a path) on this machine.
    """
    from helpers.results import make_record, save_record

    if choose_backend(backend) == "modal":
        import modal

        from helpers import modal_poc

        with modal.enable_output(), modal_poc.app.run():
            model_file = modal_poc.download_model_file.remote(repo, quant)
            record = modal_poc.model_inference.remote(model_file, prompt, n_predict, list(extra_args), True,
                                                      repo, quant)
        save_record(record, config.results_dir())
        return record
    from helpers.hub import quant_label
    from helpers.runtime import model_path, run_completion

    model = model_path(local_model)
    result = run_completion(prompt, model=model, n_predict=n_predict, extra_args=extra_args, stream=stream)
    record = make_record(result, backend="local", gpu=None, model=model.name, quant=quant_label(model.name))
    save_record(record, config.results_dir())
    return record


@dataclass
class Endpoint:
    """Where a llama-server answers, and how to talk to it.

    :func:`start` returns one; :meth:`stop` ends what *it* started — a local llama-server —
    and nothing else (a Modal deployment outlives the notebook that used it).
    """

    backend: str
    base_url: str
    api_key: str | None
    model: str
    ready_s: float | None = None
    _stop: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    @property
    def web_ui_url(self) -> str:
        return self.base_url + "/"

    def client(self, **kwargs: Any) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=self.base_url + "/v1", api_key=self.api_key or "no-key", **kwargs)

    def stop(self) -> None:
        """Stop the local server this endpoint started; safe to call again. On Modal it does nothing.

        The deployed Modal server scales to zero by itself after its idle window; to stop it now,
        and every container it has, run ``modal_server.stop_app()``.
        """
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()


def start(backend: str | None = None, api_key: str | None = None, model: str = LOCAL_MODEL,
          **overrides: Any) -> Endpoint:
    """A ready server: connect to the Modal deployment or start a local llama-server; ``endpoint.stop()`` ends it.

    Local: starts llama-server for ``model`` (default the real SmolLM2; ``"synthetic"`` for a
    Qwen3 that thinks) with the course's server settings (:mod:`helpers.server_config`, the same
    the Modal server uses) on a free port; ``overrides`` change single settings
    (``parallel=4``, ``port=8081``). It is stopped by :meth:`Endpoint.stop`, when nothing refers
    to the endpoint any more, at the end of this Python process — and, should the process be
    killed (a notebook kernel restarted), by the guardian :mod:`helpers.process` gives it.

    Modal: checks that this process has the API key, connects to the *deployed* endpoint and
    waits until it is ready (a cold start loads the model first). It starts nothing, so
    :meth:`Endpoint.stop` stops nothing there.
    """
    from helpers.client import wait_until_ready
    from helpers.server_config import MODEL_ALIAS

    if choose_backend(backend) == "modal":
        from helpers.modal_settings import ModalSettings

        key = api_key or os.environ.get(config.API_KEY_ENV)
        if not key and not ModalSettings.from_env().public:
            raise RuntimeError(f"${config.API_KEY_ENV} is not set in this Python process, so every request to the "
                               f"deployed server would be refused (401). Set it to the value stored in the Modal "
                               f"secret '{config.API_KEY_SECRET}' (os.environ['{config.API_KEY_ENV}'] = '…'), or pass "
                               "api_key=...")
        from helpers import modal_server

        url = modal_server.endpoint_url()
        ready = wait_until_ready(url, timeout_s=15 * 60, api_key=key)
        return Endpoint("modal", url, key, MODEL_ALIAS, ready)
    from helpers.runtime import LocalServer, local_server_settings

    settings = local_server_settings(model, api_key, **overrides)
    server = LocalServer(settings).start()
    endpoint = Endpoint("local", server.base_url, api_key, settings.model_name, server.ready_s)
    # A stop that runs once, whoever calls it first: stop(), the garbage collector (a notebook
    # cell run again rebinds `endpoint`), or the interpreter's exit.
    endpoint._stop = weakref.finalize(endpoint, server.stop)
    return endpoint


@contextlib.contextmanager
def serve(backend: str | None = None, api_key: str | None = None, model: str = LOCAL_MODEL,
          **overrides: Any) -> Iterator[Endpoint]:
    """:func:`start` for the duration of a ``with`` block, :meth:`Endpoint.stop` after it (also after an error).

    Local: the llama-server it started is stopped at the end of the block. Modal: the
    deployment keeps running after the block (stop it with ``modal_server.stop_app()``),
    because a deployment outlives a notebook.
    """
    endpoint = start(backend, api_key, model, **overrides)
    try:
        yield endpoint
    finally:
        endpoint.stop()
