"""The argument lists for llama-completion and llama-server — built in one place.

The local runtime and the Modal functions both call these builders, so a setting means the
same thing on a laptop CPU and on a cloud L4. The settings are small frozen dataclasses:
easy to print in a notebook, to store with a result, and to compare in a test.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: ``-ngl all`` offloads every layer to the GPU when there is one; on a CPU-only build
#: llama.cpp has no GPU device and the flag is a no-op, so one value serves both worlds.
ALL_LAYERS = "all"
FLASH_ATTN_CHOICES = ("on", "off", "auto")


def _check_gpu_layers(value: int | str) -> str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"n_gpu_layers must be >= 0, 'all' or 'auto', got {value}")
        return str(value)
    if value not in ("all", "auto"):
        raise ValueError(f"n_gpu_layers must be a number, 'all' or 'auto', got {value!r}")
    return value


@dataclass(frozen=True)
class CompletionSettings:
    """One non-interactive generation with llama-completion.

    ``n_predict``: tokens to generate; -1 means "until the model ends its answer" (or the
    context is full). Anything below -1 is rejected — llama.cpp gives -2 a special meaning
    ("fill the context") that is easy to trigger by accident and rarely wanted here.
    An empty prompt is rejected too: Qwen-style models add no BOS token, so there would be
    nothing to condition on and llama.cpp would fail with a less helpful message.
    """

    model: str
    prompt: str
    n_predict: int = 128
    ctx_size: int = 4096
    n_gpu_layers: int | str = ALL_LAYERS
    seed: int | None = None
    temperature: float | None = None
    threads: int | None = None
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("prompt is empty: give the model some text to continue, e.g. prompt='Hello'")
        if self.n_predict < -1:
            raise ValueError(f"n_predict must be -1 (until the model stops) or >= 0, got {self.n_predict}")
        if self.ctx_size < 0:
            raise ValueError(f"ctx_size must be >= 0 (0 = the model's training context), got {self.ctx_size}")
        _check_gpu_layers(self.n_gpu_layers)
        object.__setattr__(self, "model", str(self.model))
        object.__setattr__(self, "extra_args", tuple(str(a) for a in self.extra_args))


def completion_args(binary: str | os.PathLike[str], s: CompletionSettings) -> list[str]:
    """Command line for one generation that never waits on stdin.

    ``--no-conversation`` keeps llama-completion from switching to interactive chat when the
    model has a chat template (it would otherwise wait for the next user turn);
    ``--no-display-prompt`` leaves only generated text on the text channel; ``--log-jsonl``
    makes every log line a JSON record that :mod:`helpers.logs` reads without guessing.
    """
    args = [
        str(binary),
        "--model", s.model,
        "--prompt", s.prompt,
        "--n-predict", str(s.n_predict),
        "--ctx-size", str(s.ctx_size),
        "--n-gpu-layers", _check_gpu_layers(s.n_gpu_layers),
        "--no-conversation",
        "--no-display-prompt",
        "--log-jsonl",
    ]
    if s.seed is not None:
        args += ["--seed", str(s.seed)]
    if s.temperature is not None:
        args += ["--temp", str(s.temperature)]
    if s.threads is not None:
        args += ["--threads", str(s.threads)]
    return args + list(s.extra_args)


#: How llama.cpp reads a model's weights (``--load-mode``): ``mmap`` maps the file (its default),
#: ``none`` reads it into the process's own memory — what a memory snapshot needs.
LOAD_MODES = ("mmap", "none")


@dataclass(frozen=True, kw_only=True)
class InstanceSettings:
    """What every llama-server instance gets: a single server, or each model behind a router.

    A router passes its own arguments on to every model's instance, so these fields mean the
    same in both (:class:`ServerSettings`, :class:`RouterSettings`).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    parallel: int = 1
    ctx_per_slot: int = 4096
    n_gpu_layers: int | str = ALL_LAYERS
    flash_attn: str = "auto"
    api_key: str | None = field(default=None, repr=False)
    threads: int | None = None
    #: Tokens a reply may have when its request sets no ``max_tokens`` (None: until the context is full).
    max_tokens: int | None = None
    #: One of :data:`LOAD_MODES`; None leaves llama.cpp's default.
    load_mode: str | None = None
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_server_fields(self)


@dataclass(frozen=True)
class ServerSettings(InstanceSettings):
    """A long-lived llama-server.

    ``parallel`` slots serve that many requests at once (continuous batching);
    ``ctx_per_slot`` is the context each of them gets. llama-server's ``--ctx-size`` is the
    *total* KV cache, divided among the slots when ``--parallel`` is given, so we pass
    ``parallel * ctx_per_slot`` (the server then logs ``n_ctx_slot = ctx_per_slot``).
    The API key is not an argument on purpose: command lines are visible to every user
    of the machine (``ps``), so :func:`server_env` passes it in the environment instead.
    """

    model: str
    alias: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "model", str(self.model))

    @property
    def model_name(self) -> str:
        """The name clients send as ``model`` (the alias, or the file name)."""
        return self.alias or Path(self.model).name


def server_args(binary: str | os.PathLike[str], s: ServerSettings) -> list[str]:
    """Command line for llama-server with explicit host and port (the default port moved)."""
    args = [str(binary), "--model", s.model, "--host", s.host, "--port", str(s.port), *_slot_args(s),
            "--alias", s.model_name]
    return args + _tail_args(s)


def _check_server_fields(s: InstanceSettings) -> None:
    """The checks a single server and a router share (a router's instances are single servers)."""
    if s.max_tokens is not None and s.max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {s.max_tokens}")
    if not 0 < s.port < 65536:
        raise ValueError(f"port must be 1..65535, got {s.port}")
    if s.parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {s.parallel}")
    if s.ctx_per_slot < 1:
        raise ValueError(f"ctx_per_slot must be >= 1, got {s.ctx_per_slot}")
    if s.flash_attn not in FLASH_ATTN_CHOICES:
        raise ValueError(f"flash_attn must be one of {FLASH_ATTN_CHOICES}, got {s.flash_attn!r}")
    _check_gpu_layers(s.n_gpu_layers)
    if s.load_mode is not None and s.load_mode not in LOAD_MODES:
        raise ValueError(f"load_mode must be one of {LOAD_MODES}, got {s.load_mode!r}")
    object.__setattr__(s, "extra_args", tuple(str(a) for a in s.extra_args))


def _slot_args(s: InstanceSettings) -> list[str]:
    return [
        "--parallel", str(s.parallel),
        "--ctx-size", str(s.parallel * s.ctx_per_slot),
        "--n-gpu-layers", _check_gpu_layers(s.n_gpu_layers),
        "--flash-attn", s.flash_attn,
    ]


def _tail_args(s: InstanceSettings) -> list[str]:
    args = []
    if s.load_mode is not None:
        args += ["--load-mode", s.load_mode]
    if s.threads is not None:
        args += ["--threads", str(s.threads)]
    if s.max_tokens is not None:
        args += ["--n-predict", str(s.max_tokens)]
    return args + list(s.extra_args)


#: Flags that name the one model of a single server: a router has none (it names its models after their files).
_SINGLE_MODEL_FLAGS = ("-m", "--model", "-hf", "--hf-repo", "-a", "--alias")


@dataclass(frozen=True)
class RouterSettings(InstanceSettings):
    """A llama-server in **router mode**: several models behind one address, loaded on demand.

    Started without a model, llama-server becomes a router: it lists the GGUF files of
    ``models_dir`` as models (a file ``smollm2.gguf`` is the model ``smollm2``), starts one
    child llama-server per model when a request names it (the ``model`` field), and forwards
    the request there. Its own command-line arguments are passed on to every child, so the
    per-instance fields below (slots, context per slot, flash attention, reply cap…) mean
    exactly what they mean in :class:`ServerSettings`, for each model: every loaded model has
    its own KV cache of ``parallel * ctx_per_slot`` tokens. At most ``models_max`` children run
    at once (0: no limit); loading one more first unloads the least recently used. With
    ``autoload=False`` a request for an unloaded model fails until ``POST /models/load``.
    """

    models_dir: str
    #: Models loaded at once (llama.cpp's default is 4; 0 means no limit).
    models_max: int = 4
    autoload: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.models_max, bool) or not isinstance(self.models_max, int) or self.models_max < 0:
            raise ValueError(f"models_max must be a whole number >= 0 (0 = no limit), got {self.models_max!r}")
        clash = [a for a in self.extra_args if a.split("=")[0] in _SINGLE_MODEL_FLAGS]
        if clash:
            raise ValueError(f"{clash[0]} names a single model, which turns the router off; put the model's file "
                             f"in {self.models_dir} instead")
        object.__setattr__(self, "models_dir", str(self.models_dir))


def router_args(binary: str | os.PathLike[str], s: RouterSettings) -> list[str]:
    """Command line for llama-server in router mode: no ``--model``, a ``--models-dir`` instead.

    Every argument after the router's own (``--models-*``, host, port) reaches each model's
    instance unchanged; the router gives each child its own port and ``--alias`` (the model's name).
    """
    args = [str(binary), "--models-dir", s.models_dir, "--models-max", str(s.models_max)]
    if not s.autoload:
        args.append("--no-models-autoload")
    args += ["--host", s.host, "--port", str(s.port), *_slot_args(s)]
    return args + _tail_args(s)


def server_env(s: InstanceSettings) -> dict[str, str]:
    """Environment additions for llama-server (the API key, when there is one).

    A router's children inherit its environment, so each instance checks the same key; the
    router forwards the client's ``Authorization`` header with every request it passes on.
    """
    return {"LLAMA_API_KEY": s.api_key} if s.api_key else {}
