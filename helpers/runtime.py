"""Run llama.cpp on this machine: one-shot generation and a managed llama-server.

This is the "local backend": the same command lines and log parsing as the Modal
functions, executed here with the llama.cpp built by :mod:`helpers.llamacpp` — on the CPU,
or on a local NVIDIA GPU when there is one.
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from helpers import llamacpp, process
from helpers.client import wait_until_ready
from helpers.commands import (
    CompletionSettings,
    ServerSettings,
    completion_args,
    server_args,
    server_env,
)
from helpers.config import cache_dir
from helpers.errors import LlamaProcessError, ModelFileNotFoundError, ServerStartError
from helpers.logs import JsonlLog, MemoryBreakdown, PerfMetrics


def check_model_file(model: str | os.PathLike[str]) -> Path:
    """Fail early, and helpfully, when a model path is wrong."""
    from helpers.models import CHOICES

    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelFileNotFoundError(f"model file not found: {path}. Give a .gguf file, or one of: {CHOICES}")
    return path


def default_model() -> Path:
    """The embedded default: the tiny synthetic Qwen3 (written on first use)."""
    from helpers.synthetic import synthetic_model

    return synthetic_model()


def model_path(model: str | os.PathLike[str] | None) -> Path:
    """A model name (``smollm2``, ``synthetic``…), a path, or None (the synthetic default): the file."""
    from helpers.models import resolve_model

    return default_model() if model is None else resolve_model(model)


@dataclass
class CompletionResult:
    """What one llama-completion run produced and measured."""

    text: str
    returncode: int
    perf: PerfMetrics | None
    memory: MemoryBreakdown
    settings: CompletionSettings
    command: list[str]
    wall_s: float
    stopped_by_eos: bool = False
    log_tail: str = ""

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict (what the Modal PoC stores in its results volume)."""
        return {
            "text": self.text,
            "returncode": self.returncode,
            "stopped_by_eos": self.stopped_by_eos,
            "wall_s": round(self.wall_s, 3),
            "settings": asdict(self.settings),
            "command": self.command,
            "perf": self.perf.to_dict() if self.perf else None,
            "memory": self.memory.to_dict(),
        }


def stream_completion(
    args: list[str],
    *,
    on_text: Callable[[str], None] | None = None,
    timeout_s: float | None = 600.0,
) -> tuple[JsonlLog, int, float]:
    """Run a ``--log-jsonl`` llama.cpp command; feed text pieces to ``on_text`` live.

    Returns the parsed log, the exit code and the wall time. The process always ends:
    on timeout, on Ctrl-C, or on any exception here, its process group is killed.
    """
    log = JsonlLog()
    stderr_tail: collections.deque[str] = collections.deque(maxlen=60)
    started = time.monotonic()
    proc = process.spawn(args)
    timed_out = threading.Event()

    def drain_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr_tail.append(line.rstrip("\n"))

    def on_timeout() -> None:
        timed_out.set()
        process.stop(proc, grace_s=2.0)

    reader = threading.Thread(target=drain_stderr, daemon=True)
    reader.start()
    timer = threading.Timer(timeout_s, on_timeout) if timeout_s else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            piece = log.feed(line)
            if piece is not None and on_text is not None:
                on_text(piece)
        proc.wait()
    finally:
        if timer:
            timer.cancel()
        process.stop(proc, grace_s=2.0)
        reader.join(timeout=5)
    log.raw_lines.extend(stderr_tail)
    if timed_out.is_set():
        raise LlamaProcessError(f"{Path(args[0]).name} did not finish within {timeout_s:.0f} s and was stopped; "
                                "lower n_predict or raise timeout_s.", proc.returncode, log.tail())
    return log, proc.returncode, time.monotonic() - started


def run_completion(
    prompt: str,
    model: str | os.PathLike[str] | None = None,
    n_predict: int = 64,
    *,
    ctx_size: int = 4096,
    n_gpu_layers: int | str = "all",
    seed: int | None = None,
    temperature: float | None = None,
    extra_args: tuple[str, ...] | list[str] = (),
    stream: bool | Callable[[str], None] = True,
    timeout_s: float | None = 600.0,
) -> CompletionResult:
    """Generate from ``prompt`` with llama-completion, non-interactively, and measure it.

    ``model`` is a model name (:mod:`helpers.models`: ``smollm2``, ``synthetic``…) or a path;
    None means the synthetic offline model. ``stream=True`` prints text as it is
    generated (terminal or notebook); a callable receives each piece instead. Raises
    :class:`ModelFileNotFoundError` for a missing file and :class:`LlamaProcessError` (with
    the log tail) when llama.cpp fails or crashes.
    """
    settings = CompletionSettings(
        model=str(model) if model is not None else "<synthetic>", prompt=prompt, n_predict=n_predict,
        ctx_size=ctx_size, n_gpu_layers=n_gpu_layers, seed=seed, temperature=temperature,
        extra_args=tuple(extra_args),
    )  # validates the arguments before anything is built or written
    path = model_path(model)
    settings = replace(settings, model=str(path))
    args = completion_args(llamacpp.binary("llama-completion"), settings)
    on_text = _stdout_writer if stream is True else (stream or None)
    log, rc, wall = stream_completion(args, on_text=on_text, timeout_s=timeout_s)
    if stream is True:
        sys.stdout.write("\n")
        sys.stdout.flush()
    if rc != 0:
        raise LlamaProcessError(f"llama-completion failed with {process.describe_exit(rc)}", rc, log.tail())
    text = log.text
    return CompletionResult(
        text=text, returncode=rc, perf=log.perf, memory=log.memory, settings=settings, command=args,
        wall_s=wall, stopped_by_eos=log.stopped_by_eos, log_tail=log.tail(),
    )


def _stdout_writer(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


#: The longest reply a local server lets a request have when it sets no limit (the web UI sets
#: none): a small model can repeat itself without end.
LOCAL_MAX_TOKENS = 1024


def local_server_settings(model: str | os.PathLike[str] | None, api_key: str | None = None, *,
                          host: str = "127.0.0.1", port: int | None = None, **overrides: Any) -> ServerSettings:
    """The course's server settings (as on Modal) for a model on this machine.

    The model gets a short name (``smollm2``, ``synthetic-qwen3``) and replies are capped at
    :data:`LOCAL_MAX_TOKENS` unless the request asks for fewer; ``port=None`` picks a free one.
    """
    from helpers.models import model_alias
    from helpers.server_config import course_server_settings

    path = model_path(model)
    values = {"alias": model_alias(path), "max_tokens": LOCAL_MAX_TOKENS, **overrides}
    return course_server_settings(str(path), api_key, host=host, port=port or process.free_port(), **values)


@dataclass
class LocalServer:
    """A llama-server on this machine, as a context manager.

    >>> with LocalServer() as server:            # synthetic model, free port
    ...     reply = stream_chat(server.client(), "Hello")

    On entry it checks the port, starts the server in its own process group, and waits for
    ``/health`` to answer 200 (raising with the log tail if the process dies or the wait
    times out). On exit — also after an exception — the whole process group is stopped.
    Should this Python process die first (a notebook kernel killed or restarted), the server's
    guardian stops it (:func:`helpers.process.spawn`): it never outlives its owner.
    """

    settings: ServerSettings | None = None
    ready_timeout_s: float = 120.0
    #: Keep the server's log file after a clean stop (it is always kept after a failure).
    keep_log: bool = False
    proc: Any = field(default=None, init=False, repr=False)
    ready_s: float | None = field(default=None, init=False)
    log_path: Path | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.settings is None:
            self.settings = ServerSettings(model=str(default_model()), port=process.free_port())

    @classmethod
    def for_model(cls, model: str | os.PathLike[str] | None = None, port: int | None = None,
                  **settings: Any) -> LocalServer:
        """Settings from keywords; ``port=None`` picks a free port."""
        return cls(ServerSettings(model=str(model_path(model)), port=port or process.free_port(), **settings))

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    def client(self, **kwargs: Any) -> Any:
        """An ``openai.OpenAI`` client pointed at this server."""
        from openai import OpenAI

        return OpenAI(base_url=self.openai_base_url, api_key=self.settings.api_key or "no-key", **kwargs)

    def start(self) -> LocalServer:
        s = self.settings
        check_model_file(s.model)
        process.ensure_port_free(s.host, s.port)
        args = server_args(llamacpp.binary("llama-server"), s)
        log_dir = cache_dir() / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"llama-server-{s.port}-", suffix=".log", dir=log_dir)
        self.log_path = Path(name)
        with os.fdopen(fd, "w") as log:
            self.proc = process.spawn(args, env=server_env(s), stdout=log, stderr=log)
        started = time.monotonic()
        try:
            wait_until_ready(self.base_url, timeout_s=self.ready_timeout_s,
                             is_alive=lambda: self.proc.poll() is None, describe_failure=self.log_tail)
        except BaseException as exc:
            died = self.proc.poll() is not None
            self.stop()
            if isinstance(exc, ServerStartError) and died:
                raise ServerStartError(
                    f"llama-server exited with {process.describe_exit(self.proc.returncode)} while starting",
                    self.proc.returncode, self.log_tail(),
                ) from None
            raise
        self.ready_s = time.monotonic() - started
        return self

    def log_tail(self, n: int = 25) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc is None:
            return
        was_healthy = self.ready_s is not None and self.proc.poll() is None
        process.stop(self.proc, grace_s=3.0)
        if was_healthy and not self.keep_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_foreground(model: str | os.PathLike[str] = "smollm2", *, port: int = 8080, parallel: int | None = None,
                     api_key_env: str | None = None, host: str = "127.0.0.1") -> int:
    """``python -m helpers serve``: a llama-server with the course's settings, until Ctrl-C or SIGTERM.

    The same settings as the Modal server, on this machine (:func:`local_server_settings`). The
    first Ctrl-C or SIGTERM stops llama-server's whole process group; further signals are
    ignored while it stops, so none can interrupt that.
    """
    import signal

    from helpers.client import http_get
    from helpers.memory import kv_cache_bytes
    from helpers.sizes import MIB

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ValueError(f"${api_key_env} is unset or empty: export the key there first, or leave out "
                             "--api-key-env")
    overrides = {"parallel": parallel} if parallel is not None else {}
    settings = local_server_settings(model, api_key, host=host, port=port, **overrides)
    path = Path(settings.model)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = LocalServer(settings)
    try:
        server.start()
        from helpers.gguf_header import read_local

        kv = kv_cache_bytes(read_local(path).shape(), settings.parallel * settings.ctx_per_slot) / MIB
        ui = http_get(server.base_url + "/", headers={"Accept-Encoding": "gzip"})[0] == 200
        print(f"llama-server is ready: {path.name}, {settings.parallel} slots x {settings.ctx_per_slot:,} tokens "
              f"(KV cache {kv:,.0f} MiB)", flush=True)
        print(f"  web UI      {server.base_url}/" + ("" if ui else "  (not in this build: the API only)"))
        print(f"  OpenAI API  {server.openai_base_url}  (model {settings.model_name!r}"
              + (f", key from ${api_key_env})" if api_key else ", no key)"))
        print(f"  log         {server.log_path}")
        print("Press Ctrl-C (or send SIGTERM) to stop it.", flush=True)
        while server.running:
            time.sleep(0.2)
        print(f"llama-server exited with {process.describe_exit(server.proc.returncode)}:\n{server.log_tail()}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        if server.running:
            print("stopping llama-server…", flush=True)
            server.stop()
            print("stopped.", flush=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
