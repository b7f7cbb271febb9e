"""Run llama.cpp on this machine: one-shot generation and a managed llama-server.

This is the "local backend": the same command lines and log parsing as the Modal
functions, executed here with the llama.cpp built by :mod:`helpers.llamacpp` — on the CPU,
or on a local NVIDIA GPU when there is one.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from helpers import llamacpp, process
from helpers.client import wait_until_ready
from helpers.commands import (
    CompletionSettings,
    RouterSettings,
    ServerSettings,
    completion_args,
    router_args,
    server_args,
    server_env,
)
from helpers.config import cache_dir
from helpers.errors import CourseError, LlamaProcessError, ModelFileNotFoundError, ServerStartError
from helpers.logs import JsonlLog, MemoryBreakdown, PerfMetrics


def check_model_file(model: str | os.PathLike[str]) -> Path:
    """Fail early, and helpfully, when a model path is wrong: missing, or not a GGUF file.

    The first four bytes of every GGUF file are ``GGUF``. Checking them here, before any
    llama.cpp binary is found or started, turns a config.json, a Git LFS pointer or an HTML
    error page saved as ``.gguf`` into one line, instead of llama.cpp's log of a failed load.
    """
    from helpers.gguf_header import GGUF_MAGIC, GgufHeaderError
    from helpers.models import CHOICES

    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelFileNotFoundError(f"model file not found: {path}. Give a .gguf file, or one of: {CHOICES}")
    with path.open("rb") as f:
        head = f.read(len(GGUF_MAGIC))
    if head != GGUF_MAGIC:
        found = "it is empty" if not head else f"it starts with {head!r}, not {GGUF_MAGIC!r}"
        raise GgufHeaderError(f"{path} is not a GGUF file ({found}); give a .gguf model file "
                              f"(a Git LFS pointer or a saved web page is not one), or one of: {CHOICES}")
    return path


def default_model() -> Path:
    """The embedded default: the tiny synthetic Qwen3 (written on first use)."""
    from helpers.synthetic import synthetic_model

    return synthetic_model()


def model_path(model: str | os.PathLike[str] | None) -> Path:
    """A model name (``smollm2``, ``synthetic``…), a path, or None (the synthetic default): the file.

    The file is checked (:func:`check_model_file`) before anything runs on it.
    """
    from helpers.models import resolve_model

    return check_model_file(default_model() if model is None else resolve_model(model))


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

    def check_inputs(self) -> None:
        """Fail before starting anything when the model file is missing."""
        check_model_file(self.settings.model)

    def command(self) -> list[str]:
        """The llama-server command line these settings give."""
        return server_args(llamacpp.binary("llama-server"), self.settings)

    def start(self) -> LocalServer:
        s = self.settings
        self.check_inputs()
        process.ensure_port_free(s.host, s.port)
        args = self.command()
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
    from helpers.client import http_get
    from helpers.memory import kv_cache_bytes
    from helpers.sizes import MIB

    api_key = _api_key_from(api_key_env)
    overrides = {"parallel": parallel} if parallel is not None else {}
    settings = local_server_settings(model, api_key, host=host, port=port, **overrides)
    path = Path(settings.model)
    server = LocalServer(settings)

    def announce() -> None:
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

    return _run_in_foreground(server, announce)


def _api_key_from(api_key_env: str | None) -> str | None:
    """The key in ``$api_key_env`` (None without a variable); a one-line error when it is unset."""
    if not api_key_env:
        return None
    api_key = os.environ.get(api_key_env)
    if not api_key:
        raise ValueError(f"${api_key_env} is unset or empty: export the key there first, or leave out "
                         "--api-key-env")
    return api_key


def _run_in_foreground(server: LocalServer, announce: Callable[[], None]) -> int:
    """Start ``server``, ``announce()`` it, and wait until Ctrl-C/SIGTERM (0) or until it dies (1).

    The first Ctrl-C or SIGTERM stops llama-server's whole process group; further signals are
    ignored while it stops, so none can interrupt that.
    """
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        announce()
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


# --- Several models behind one address: llama-server's router mode --------------------------------------------

class RouterRequestError(CourseError, RuntimeError):
    """The router refused a request of its model API (``/models/load``, ``/models/unload``)."""


#: The models ``serve --router`` offers unless told otherwise: the two that need nothing beyond PyPI.
ROUTER_MODELS = ("smollm2", "synthetic")
#: Names the router would not list as models: it takes such files for a multimodal projector or a draft model.
_COMPANION_MARKERS = ("mmproj",)
_COMPANION_PREFIXES = ("mtp-", "dspark-", "dflash-")
#: A model's ``status.value`` while its instance exists (and counts against ``--models-max``).
RUNNING_STATES = ("loading", "loaded", "sleeping")


def router_models_dir(models: Sequence[str | os.PathLike[str]] = ROUTER_MODELS,
                      root: str | os.PathLike[str] | None = None) -> Path:
    """A folder the router lists as its models: one symlink ``<name>.gguf`` per model, under ``root``.

    llama-server in router mode names each GGUF file of its ``--models-dir`` after the file
    (``smollm2.gguf`` is the model ``smollm2``). The course's files have long names
    (``SmolLM2-135M-Instruct.Q4_1.gguf``), so the folder holds links with the short names the
    single server uses as its alias (:func:`helpers.models.model_alias`): a request names a
    model the same way whether one server or a router answers. Links, not copies: nothing is
    duplicated. The folder is named after its contents, so the same selection reuses it and
    two selections never share one. ``root`` defaults to ``router/`` in the course cache.
    """
    from helpers.models import model_alias

    if not models:
        raise ValueError("no models given: name at least one, e.g. --models smollm2,synthetic")
    files: dict[str, list[Path]] = {}
    for spec in models:
        given = model_path(spec)
        name, parts = model_alias(_SPLIT.sub(".gguf", given.name)), _split_parts(given.resolve())
        if name in files and files[name] != parts:
            raise ValueError(f"two models would both be called {name!r} ({files[name][0].name} and "
                             f"{parts[0].name}); rename one of the files")
        files[name] = parts
    digest = hashlib.sha256("\n".join(f"{n}={p}" for n, p in sorted(files.items())).encode()).hexdigest()[:12]
    return link_models(files, Path(root or cache_dir() / "router") / digest)


#: The part numbers in a split GGUF's file name (``…-00001-of-00003.gguf``).
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


def _split_parts(path: Path) -> list[Path]:
    """``path``, or — for the first part of a split model — every part, from its folder."""
    if not _SPLIT.search(path.name):
        return [path]
    stem = _SPLIT.sub("", path.name)
    return sorted(p.resolve() for p in path.parent.glob(f"{stem}-*-of-*.gguf") if _SPLIT.search(p.name))


def find_models(root: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """Every model under ``root`` (a folder tree of GGUF files): its short name -> its file, or its parts.

    The name is the file's, lower-case, without ``.gguf`` (``Qwen3-8B-Q5_K_M.gguf`` is
    ``qwen3-8b-q5_k_m``); the parts of a split model make one model. Vision projectors
    (``mmproj…``) are not models. Should two folders hold files of the same name, the later one
    (in sorted order) is called ``<its folder>--<name>``.
    """
    from helpers.models import model_alias

    groups: dict[tuple[Path, str], list[Path]] = {}
    for path in sorted(Path(root).rglob("*.gguf")):
        if path.name.lower().startswith("mmproj") or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        groups.setdefault((path.parent, _SPLIT.sub(".gguf", path.name)), []).append(path)
    found: dict[str, list[Path]] = {}
    for (folder, file_name), parts in groups.items():
        name = model_alias(file_name)
        if name in found:
            name = f"{folder.name.lower()}--{name}"
        found[name] = sorted(parts)
    return found


def link_models(models: Mapping[str, Sequence[Path]], folder: str | os.PathLike[str]) -> Path:
    """Make ``folder`` hold exactly ``models`` (name -> file, or the parts of a split model), as links.

    The router lists a file ``<name>.gguf`` as the model ``name``, and a sub-folder ``<name>/``
    holding the parts of a split model as one model. Each link is replaced atomically, so two
    routers starting at once over the same folder never see a half-made one; links to models
    no longer asked for are removed (only links: a real file is never deleted).
    """
    folder = Path(folder)
    for name in models:
        if not name or "/" in name or any(m in name for m in _COMPANION_MARKERS) or name.startswith(
                _COMPANION_PREFIXES):
            raise ValueError(f"the router cannot list a model called {name!r}: a name must be non-empty, without "
                             f"'/', without 'mmproj' and not start with {', '.join(_COMPANION_PREFIXES)}; "
                             "rename the file")
    folder.mkdir(parents=True, exist_ok=True)
    wanted: set[str] = set()
    for name, parts in models.items():
        if len(parts) == 1:
            wanted.add(f"{name}.gguf")
            _link(folder / f"{name}.gguf", Path(parts[0]))
        else:
            wanted.add(name)
            (folder / name).mkdir(exist_ok=True)
            for part in parts:
                _link(folder / name / Path(part).name, Path(part))
    for entry in folder.iterdir():
        if entry.name in wanted or entry.name.startswith("."):
            continue
        if entry.is_symlink():
            entry.unlink(missing_ok=True)
        elif entry.is_dir() and all(p.is_symlink() for p in entry.iterdir()):
            for p in entry.iterdir():
                p.unlink(missing_ok=True)
            entry.rmdir()
    return folder


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() and link.resolve() == target.resolve():
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def router_model_files(models_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """What a router over ``models_dir`` will list: model name -> the file it loads (links resolved).

    A file ``<name>.gguf`` is the model ``name``; a sub-folder is a split model, loaded from its first part.
    """
    found = {}
    for entry in sorted(Path(models_dir).iterdir()):
        if entry.is_dir():
            parts = sorted(entry.glob("*-00001-of-*.gguf"))
            if parts:
                found[entry.name] = parts[0].resolve()
        elif entry.name.endswith(".gguf") and not entry.name.startswith("."):
            found[entry.name[: -len(".gguf")]] = entry.resolve()
    return found


def local_router_settings(models: Sequence[str | os.PathLike[str]] = ROUTER_MODELS, api_key: str | None = None, *,
                          host: str = "127.0.0.1", port: int | None = None, **overrides: Any) -> RouterSettings:
    """The course's settings (:func:`helpers.server_config.course_router_settings`) for a router here.

    Every model gets the single server's settings, replies capped at :data:`LOCAL_MAX_TOKENS`;
    ``port=None`` picks a free port.
    """
    from helpers.server_config import course_router_settings

    values = {"max_tokens": LOCAL_MAX_TOKENS, **overrides}
    return course_router_settings(str(router_models_dir(models)), api_key, host=host,
                                  port=port or process.free_port(), **values)


@dataclass
class LocalRouter(LocalServer):
    """llama-server in router mode on this machine: several models, one address, as a context manager.

    >>> with LocalRouter.for_models(["smollm2", "synthetic"]) as router:
    ...     stream_chat(router.client(), "Hi", model="smollm2")

    The router itself loads no model; a request's ``model`` field makes it start that model's
    own llama-server (a child process) and forward the request. The children are in the
    router's process group, so stopping the router's group stops them too, and each child also
    exits when the router's end of its stdin closes — when the router dies, however it dies.
    :meth:`models`, :meth:`load` and :meth:`unload` use the router's model API.
    """

    settings: RouterSettings | None = None
    #: Seconds :meth:`load` waits for a model (its llama-server starts and reads the file).
    load_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.settings is None:
            self.settings = RouterSettings(models_dir=str(router_models_dir()), port=process.free_port())

    @classmethod
    def for_models(cls, models: Sequence[str | os.PathLike[str]] = ROUTER_MODELS, port: int | None = None,
                   **settings: Any) -> LocalRouter:
        """Settings from keywords (:class:`RouterSettings`); ``port=None`` picks a free port."""
        return cls(RouterSettings(models_dir=str(router_models_dir(models)), port=port or process.free_port(),
                                  **settings))

    def check_inputs(self) -> None:
        folder = Path(self.settings.models_dir)
        if not folder.is_dir() or not router_model_files(folder):
            raise ModelFileNotFoundError(f"no .gguf files in {folder}: give the router a folder of models "
                                         "(helpers.runtime.router_models_dir builds one)")

    def command(self) -> list[str]:
        return router_args(llamacpp.binary("llama-server"), self.settings)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One JSON request to the router; a one-line error with the router's own message on failure."""
        import urllib.error
        import urllib.request

        headers = {"Content-Type": "application/json"}
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                text = json.loads(text)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                pass
            raise RouterRequestError(f"{method} {path} failed with HTTP {exc.code}: {text}") from None

    def models(self) -> list[dict[str, Any]]:
        """``GET /models``: every model the router offers, each with its ``status`` (``value``: loaded…)."""
        return self._call("GET", "/models")["data"]

    def status(self, name: str) -> str:
        """``unloaded``, ``loading``, ``loaded`` (or ``sleeping``) for one model."""
        return self._entry(name)["status"]["value"]

    def _entry(self, name: str) -> dict[str, Any]:
        listed = self.models()
        for entry in listed:
            if entry["id"] == name or name in entry.get("aliases", ()):
                return entry
        raise ValueError(f"the router has no model {name!r}; its models: {', '.join(e['id'] for e in listed)}")

    def load(self, name: str, *, wait: bool = True) -> None:
        """``POST /models/load``: start the model's instance (the least recently used one may be unloaded).

        A model that is already loaded (or loading) is left as it is: the router would refuse
        to load it twice.
        """
        if self.status(name) not in RUNNING_STATES:
            self._call("POST", "/models/load", {"model": name})
        if wait:
            self.wait_for(name, "loaded", self.load_timeout_s)

    def unload(self, name: str, *, wait: bool = True) -> None:
        """``POST /models/unload``: stop the model's instance and free its memory (nothing if it is not loaded)."""
        if self.status(name) in RUNNING_STATES:
            self._call("POST", "/models/unload", {"model": name})
        if wait:
            self.wait_for(name, "unloaded", 30.0)

    def wait_for(self, name: str, value: str, timeout_s: float) -> None:
        """Wait until ``name``'s status is ``value``; fail at once if its instance failed to start."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self._entry(name)["status"]
            if status["value"] == value:
                return
            if status.get("failed") and value == "loaded":
                raise ServerStartError(f"the router could not load {name!r}: its llama-server exited with "
                                       f"{process.describe_exit(status.get('exit_code'))}", status.get("exit_code"),
                                       self.log_tail())
            if not self.running:
                raise ServerStartError("the router exited", self.proc.returncode, self.log_tail())
            if time.monotonic() > deadline:
                raise ServerStartError(f"{name!r} is still {status['value']!r} after {timeout_s:.0f} s "
                                       f"(waiting for {value!r})", log_tail=self.log_tail())
            time.sleep(0.1)


def serve_router_foreground(models: Sequence[str | os.PathLike[str]] = ROUTER_MODELS, *, port: int = 8080,
                            models_max: int | None = None, parallel: int | None = None,
                            api_key_env: str | None = None, host: str = "127.0.0.1") -> int:
    """``python -m helpers serve --router``: several models behind one llama-server, until Ctrl-C or SIGTERM.

    Each model is served with the course's settings (:func:`local_router_settings`) once a
    request names it; at most ``models_max`` are loaded at once (the course's default:
    :data:`helpers.server_config.ROUTER_MODELS_MAX`). Stopping ends the router and every model
    it loaded.
    """
    from helpers.client import http_get
    from helpers.gguf_header import read_local
    from helpers.memory import kv_cache_bytes
    from helpers.sizes import MIB

    api_key = _api_key_from(api_key_env)
    overrides: dict[str, Any] = {}
    if parallel is not None:
        overrides["parallel"] = parallel
    if models_max is not None:
        overrides["models_max"] = models_max
    settings = local_router_settings(models, api_key, host=host, port=port, **overrides)
    files = router_model_files(settings.models_dir)
    server = LocalRouter(settings)

    def announce() -> None:
        n_ctx = settings.parallel * settings.ctx_per_slot
        ui = http_get(server.base_url + "/", headers={"Accept-Encoding": "gzip"})[0] == 200
        at_once = "no limit" if settings.models_max == 0 else f"at most {settings.models_max} loaded at once"
        print(f"llama-server (router) is ready: {len(files)} models, {at_once}; each model gets {settings.parallel} "
              f"slots x {settings.ctx_per_slot:,} tokens once loaded", flush=True)
        width = max(len(n) for n in files)
        for name, path in files.items():
            kv = kv_cache_bytes(read_local(path).shape(), n_ctx) / MIB
            print(f"  model {name:<{width}}  {path.name} (KV cache {kv:,.0f} MiB when loaded)")
        print(f"  web UI      {server.base_url}/" + ("" if ui else "  (not in this build: the API only)"))
        print(f"  OpenAI API  {server.openai_base_url}  (\"model\": one of the names above"
              + (f"; key from ${api_key_env})" if api_key else "; no key)"))
        print(f"  models      {server.base_url}/models  (each one's status; POST /models/load or /models/unload "
              '{"model": NAME})')
        print(f"  folder      {settings.models_dir}")
        print(f"  log         {server.log_path}")
        print("Press Ctrl-C (or send SIGTERM) to stop it and every model it loaded.", flush=True)

    return _run_in_foreground(server, announce)
