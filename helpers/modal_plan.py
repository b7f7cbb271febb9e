"""``python -m helpers modal-plan``: what the course will run on Modal, worked out before anyone pays.

For every function of every course app: the GPU, timeout, volumes, secrets, scaling, the image
as the exact Dockerfile lines Modal's image builder receives (every layer, in order), the
files mounted at start, and the command the container runs.

How it is computed: each app module is imported the way ``modal run -m`` imports it, and Modal's
own client code then prepares every image layer and every function definition — the very
requests it would send to Modal's servers (``ImageGetOrCreate``, ``FunctionCreate``). A
stand-in client records those requests instead of sending them: nothing leaves this machine
and no account is needed. That uses a few private parts of the ``modal`` package, which is
why pyproject.toml pins the range of ``modal`` versions the course is tested with.

Preparing a definition marks Modal's objects as created, so the work happens in a fresh
Python process (:func:`compute_plan`); :func:`plan_here` is what that process runs. Giving
:func:`compute_plan` an environment shows what a machine — or a container — with exactly
those variables would run: the tests compare the deploying machine's plan with the plan
computed from nothing but an image's ``ENV`` lines and its secrets' keys.

Any other Modal app works the same way — your own file, as ``modal run FILE.py`` would import
it (``python -m helpers modal-plan --app FILE.py``, or ``compute_plan(apps=["FILE.py"])``).
The plan cannot know what a function's body will start; an app says it with a module-level
``COMMANDS`` dictionary (function name → the command line that function runs), which the
function itself should use, so that what is shown is what runs. For such a file the plan also says,
per function, which modules the file imports that the function's container would lack
(:func:`missing_imports`): Modal mounts only the file itself, and every container imports all of it.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

#: The course's Modal apps, as ``modal run -m`` names them.
APP_MODULES = ("helpers.modal_hello", "helpers.modal_download", "helpers.modal_poc", "helpers.modal_server")


def compute_plan(env: Mapping[str, str] | None = None, timeout_s: float = 120.0,
                 apps: Sequence[str | os.PathLike[str]] | None = None) -> dict[str, Any]:
    """The plan, computed in a fresh Python process with ``env`` (default: this one's environment).

    ``apps``: module names (``helpers.modal_server``) or ``.py`` files to plan instead of the
    course's own apps; a relative file is found from this process's working directory.
    """
    argv = [sys.executable, "-m", "helpers", "modal-plan", "--json"]
    for app in apps or ():
        argv += ["--app", os.path.abspath(app) if _is_file(app) else str(app)]
    proc = subprocess.run(argv, capture_output=True, text=True,
                          env=dict(os.environ if env is None else env), timeout=timeout_s, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise RuntimeError("could not compute the Modal plan: " + (lines[-1] if lines else f"exit {proc.returncode}"))
    return json.loads(proc.stdout)


def env_from_dockerfile(lines: list[str]) -> dict[str, str]:
    """Variables set by the ``ENV KEY=value`` lines Modal writes (one assignment per line)."""
    env: dict[str, str] = {}
    for line in lines:
        if line.startswith("ENV "):
            for word in shlex.split(line[4:]):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def _is_file(app: str | os.PathLike[str]) -> bool:
    return str(app).endswith(".py") or os.sep in str(app) or Path(app).is_file()


def load_app_module(app: str | os.PathLike[str]) -> ModuleType:
    """Import an app the way ``modal run`` does: a module name, or a ``.py`` file with its folder on ``sys.path``."""
    if Path(app).is_dir():
        raise ValueError(f"{app} is a folder: give the .py file in it that defines your modal.App")
    if not _is_file(app):
        try:
            return importlib.import_module(str(app))
        except ModuleNotFoundError as exc:
            raise ValueError(f"no module {app!r} ({exc}); give a .py file or a module name such as "
                             "helpers.modal_server") from None
    path = Path(app).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no app file {app}: give the path of a .py file that defines a modal.App, "
                                "or a module name such as helpers.modal_server")
    if path.suffix != ".py":
        raise ValueError(f"{app} is not a Python file: give the .py file that defines your modal.App")
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:  # a learner's own file: point at the line, as Python would, without a traceback
        raise ValueError(f"{exc.filename}:{exc.lineno}: {exc.msg}; fix the line, then plan again") from None
    return module


def _find_app(module: ModuleType) -> Any:
    """The module's ``app``, or its only ``modal.App`` (what ``modal run`` looks for)."""
    import modal

    if isinstance(getattr(module, "app", None), modal.App):
        return module.app
    apps = [v for v in vars(module).values() if isinstance(v, modal.App)]
    if len(apps) != 1:
        raise ValueError(f"{module.__name__} defines {len(apps)} modal.App objects and none named 'app'; "
                         "name the one to plan 'app'")
    return apps[0]


def plan_here(apps: Sequence[str | os.PathLike[str]] = APP_MODULES) -> dict[str, Any]:
    """Import every app (default: the course's) in *this* process and record what Modal would build and run."""
    from modal._image import LATEST_IMAGE_BUILDER_VERSION
    from modal._utils.async_utils import synchronizer

    functions = []
    for spec in apps:
        module = load_app_module(spec)
        app = synchronizer._translate_in(_find_app(module))
        commands = None if module.__name__ in APP_MODULES else getattr(module, "COMMANDS", {})
        for name, function in app._local_state.functions.items():
            planned = asyncio.run(_plan_function(app._name, name, function, commands))
            planned["module"] = module.__name__
            if commands is not None and getattr(module, "__file__", None):  # your own file: does it import?
                planned["missing_imports"] = missing_imports(module.__file__, planned)
            functions.append(planned)
    return {"image_builder_version": _builder_version(LATEST_IMAGE_BUILDER_VERSION), "functions": functions}


def _builder_version(server_default: str) -> str:
    from modal.config import config

    return config.get("image_builder_version") or server_default


async def _plan_function(app_name: str, name: str, function: Any,
                         commands: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """One function's plan; ``commands`` (an app's ``COMMANDS``) says what its container runs, None: a course app."""
    from modal_proto import api_pb2

    recorder = _Recorder()
    await recorder.create(function)
    definition = next(r.function for r in recorder.requests if isinstance(r, api_pb2.FunctionCreateRequest))
    layers = [list(r.image.dockerfile_commands) for r in recorder.requests
              if isinstance(r, api_pb2.ImageGetOrCreateRequest)]
    dockerfile = [line for layer in layers for line in layer]
    image = function._spec.image
    web = definition.webhook_config
    if not web.web_server_port:  # a class: its web server is one of its methods
        web = next((m.webhook_config for m in definition.method_definitions.values()
                    if m.webhook_config.web_server_port), web)
    gpu = definition.resources.gpu_config
    return {
        "app": app_name,
        "name": name,
        "gpu": (gpu.gpu_type if gpu.count == 1 else f"{gpu.gpu_type}:{gpu.count}") if gpu.count else None,
        "timeout_s": definition.timeout_secs,
        "volumes": {m.mount_path: recorder.names[m.volume_id] for m in definition.volume_mounts},
        "secrets": [recorder.names[s] for s in definition.secret_ids],
        "min_containers": definition.autoscaler_settings.min_containers,
        "scaledown_window_s": definition.autoscaler_settings.scaledown_window or None,
        "max_inputs": definition.max_concurrent_inputs or 1,
        "web_server_port": web.web_server_port or None,
        "startup_timeout_s": web.web_server_startup_timeout or None,
        "memory_snapshot": definition.checkpointing_enabled,
        "experimental_options": dict(definition.experimental_options),
        "dockerfile": dockerfile,
        "layers": layers,
        "mounts": [_describe_mount(m) for m in image._deferred_mounts],
        "env": env_from_dockerfile(dockerfile),
        "command": (container_command(app_name, name) if commands is None
                    else [str(a) for a in commands[name]] if name in commands else None),
    }


# --- what a container can import ------------------------------------------------------------------------------

#: Run in a fresh interpreter: import ``modal`` (every container has Modal's client), then refuse every other
#: module that is neither in the standard library nor on the allow list, and import the app file as the
#: container does. Self-contained on purpose: importing anything of this machine first would hide what is missing.
_IMPORT_CHECK = r"""
import ast, importlib.abc, importlib.util, json, sys
import modal
app_path, function_name, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
allowed = set(sys.stdlib_module_names) | {m.split(".")[0] for m in sys.modules} | set(extra)
missing = []

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        top = fullname.split(".")[0]
        if top not in allowed:
            if top not in missing:
                missing.append(top)
            raise ModuleNotFoundError(f"No module named {top!r}", name=top)
        return None

sys.meta_path.insert(0, Refuse())
source = open(app_path).read()
spec = importlib.util.spec_from_file_location(extra[0], app_path)
try:
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
except ModuleNotFoundError:
    pass  # the container stops at the first; `missing` has it
for node in ast.walk(ast.parse(source)):  # imports inside the function, run when it is called
    if isinstance(node, ast.FunctionDef) and node.name == function_name:
        for sub in ast.walk(node):
            names = ([a.name for a in sub.names] if isinstance(sub, ast.Import) else
                     [sub.module] if isinstance(sub, ast.ImportFrom) and sub.level == 0 and sub.module else [])
            missing += [n.split(".")[0] for n in names if n.split(".")[0] not in allowed | set(missing)]
print(json.dumps(missing))
"""


def image_python_packages(function_plan: Mapping[str, Any]) -> list[str]:
    """Top-level module names a function's container has beyond the standard library and Modal's client.

    Two sources: the packages its image installs with pip (``RUN … pip install NAME…``; a distribution
    such as ``huggingface-hub`` is imported as ``huggingface_hub``) and the local packages Modal mounts
    at start (``add_local_python_source``). Modal mounts nothing else: an app given as a file gets
    only that file, so a package this machine has is *not* there unless the image adds it.
    """
    modules = []
    for line in function_plan["dockerfile"]:
        if line.startswith("RUN ") and " pip install " in line:
            for word in shlex.split(line.split(" pip install ", 1)[1].split("&&")[0]):
                name = word.split(";")[0]
                for sep in "<>=!~[ ":
                    name = name.split(sep)[0]
                if name and not word.startswith(("-", "$")) and "/" not in name:
                    modules.append(name.replace("-", "_").lower())
    for mount in function_plan["mounts"]:
        modules += [part.split()[2] for part in mount.split("; ") if part.startswith("python package ")]
    return modules


def missing_imports(app_file: str | os.PathLike[str], function_plan: Mapping[str, Any],
                    timeout_s: float = 120.0) -> list[str]:
    """Modules the app file imports that ``function_plan``'s container would not have ([] when it has them all).

    Checked by importing the file in a fresh Python that has only the standard library, Modal's
    client and :func:`image_python_packages` (every other import fails, as it would in the container),
    plus the imports inside the function's own body, which run when it is called. A module listed here
    is a ``ModuleNotFoundError`` before the function starts: add it to that function's image.
    """
    extra = [Path(app_file).stem, *image_python_packages(function_plan)]
    proc = subprocess.run([sys.executable, "-c", _IMPORT_CHECK, str(Path(app_file).resolve()), function_plan["name"],
                           json.dumps(extra)], capture_output=True, text=True, timeout=timeout_s,
                          cwd=Path(app_file).resolve().parent.parent, stdin=subprocess.DEVNULL,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise RuntimeError(f"could not check the imports of {app_file}: " + (lines[-1] if lines else "no output"))
    return json.loads(proc.stdout)


def container_command(app_name: str, function_name: str) -> list[str] | None:
    """The llama.cpp command a function's container runs; None for functions that run none.

    Names in angle brackets are known only at run time: the model file found in the volume,
    and the prompt a caller sends.
    """
    from helpers import config, llamacpp
    from helpers.modal_common import SETTINGS

    if app_name == SETTINGS.app_name and function_name in ("serve", "Server.*"):
        from helpers.modal_common import model_subdir
        from helpers.modal_server import llama_router_command, llama_server_command

        if SETTINGS.router:
            return llama_router_command()
        return llama_server_command(f"{config.MODEL_DIR}/{model_subdir(SETTINGS.repo)}/<{SETTINGS.quant} file>")
    if (app_name, function_name) == (config.MODAL_POC_APP, "model_inference"):
        from helpers.commands import CompletionSettings, completion_args
        from helpers.modal_poc import N_PREDICT

        settings = CompletionSettings(model=f"{config.MODEL_DIR}/<model file>", prompt="<prompt>", n_predict=N_PREDICT)
        return completion_args(f"{llamacpp.IMAGE_BIN_DIR}/llama-completion", settings)
    return None


def _describe_mount(mount: Any) -> str:
    parts = []
    for entry in mount._entries:
        module, remote = getattr(entry, "module_name", None), getattr(entry, "remote_dir", None)
        parts.append(f"python package {module} -> {remote}/{module}" if module else repr(entry))
    return "; ".join(parts)


class _Recorder:
    """Stands in for Modal's client: records the requests instead of sending them."""

    def __init__(self) -> None:
        from modal._load_context import LoadContext

        self.requests: list[Any] = []
        self.names: dict[str, str] = {}  # stand-in object id -> the volume's or secret's name
        self._stub = self
        self._snapshotted = False
        self._loaded: set[int] = set()
        self.context = LoadContext(client=self, environment_name="", app_id="ap-plan", task_context=None)

    async def create(self, function: Any) -> None:
        import modal._environments as environments

        cached = dict(environments.ENVIRONMENT_CACHE)
        try:
            for dep in function._deps_():
                await self.load(dep)
            await function._load(function, self, self.context, None)
        finally:
            environments.ENVIRONMENT_CACHE.clear()
            environments.ENVIRONMENT_CACHE.update(cached)

    # -- the part of Modal's resolver that loaders call ------------------------------
    build_start = 0.0

    async def load(self, obj: Any, parent_load_context: Any = None, *, existing_object_id: str | None = None) -> Any:
        from modal._image import _Image

        if id(obj) in self._loaded:
            return obj
        self._loaded.add(id(obj))
        if isinstance(obj, _Image):  # build its layers, base first, with Modal's own code
            for dep in obj._deps_():
                await self.load(dep)
            await obj._load(obj, self, self.context, None)
        else:  # a volume, secret or mount: only its id matters to the definitions that use it
            object_id = f"{type(obj)._type_prefixes[0]}-plan{len(self._loaded)}"
            obj._object_id, obj._client, obj._is_hydrated = object_id, self, True
            self.names[object_id] = getattr(obj, "_name", None) or repr(obj)
        return obj

    # -- the two server calls that matter, answered as success ------------------------
    async def ImageGetOrCreate(self, request: Any) -> Any:  # noqa: N802 - Modal's RPC name
        from modal_proto import api_pb2

        self.requests.append(request)
        return api_pb2.ImageGetOrCreateResponse(
            image_id=f"im-plan{len(self.requests)}",
            result=api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS))

    async def FunctionCreate(self, request: Any) -> Any:  # noqa: N802
        from modal_proto import api_pb2

        self.requests.append(request)
        ranked = api_pb2.FunctionData.RankedFunction(rank=0, function=request.function)
        return api_pb2.FunctionCreateResponse(function_id=f"fu-plan{len(self.requests)}",
                                              function_data=api_pb2.FunctionData(ranked_functions=[ranked]))

    async def EnvironmentGetOrCreate(self, request: Any) -> Any:  # noqa: N802
        from modal._image import LATEST_IMAGE_BUILDER_VERSION
        from modal_proto import api_pb2

        settings = api_pb2.EnvironmentSettings(image_builder_version=LATEST_IMAGE_BUILDER_VERSION)
        return api_pb2.EnvironmentGetOrCreateResponse(
            environment_id="en-plan", metadata=api_pb2.EnvironmentMetadata(name="main", settings=settings))


def render_text(plan: dict[str, Any], width: int = 200) -> str:
    """The plan for people: one block per function, long Dockerfile lines shortened."""
    out = [f"Modal image builder {plan['image_builder_version']}; nothing below has been sent to Modal."]
    for f in plan["functions"]:
        scaling = (f"min {f['min_containers']} container(s), idle stop after {f['scaledown_window_s']} s, "
                   if f["scaledown_window_s"] else "")
        web = f", HTTPS -> port {f['web_server_port']}" if f["web_server_port"] else ""
        out += ["", f"{f['app']} / {f['name']}: GPU {f['gpu'] or 'none (CPU)'}, timeout {f['timeout_s']} s, "
                    f"{scaling}{f['max_inputs']} input(s) at once{web}"]
        volumes = ", ".join(f"{name} at {path}" for path, name in f["volumes"].items()) or "none"
        out.append(f"  volumes: {volumes}; secrets: {', '.join(f['secrets']) or 'none'}")
        if f["memory_snapshot"]:
            gpu_snap = f["experimental_options"].get("enable_gpu_snapshot") == "True"
            out.append(f"  memory snapshot: on ({'CPU and GPU memory, alpha' if gpu_snap else 'CPU memory only'})")
        out.append(f"  image: {len(f['layers'])} layers, {len(f['dockerfile'])} Dockerfile lines")
        for line in f["dockerfile"]:
            shown = line if len(line) <= width else f"{line[:width - 40]}… ({len(line):,} characters; --json)"
            out.append(f"    {shown}")
        out.append(f"  mounted at start: {'; '.join(f['mounts']) or 'nothing'}")
        if f.get("missing_imports"):
            out.append(f"  its container lacks {', '.join(f['missing_imports'])}, which the file imports: "
                       "add it to this function's image (.add_local_python_source(...) or .uv_pip_install(...))")
        out.append(f"  runs: {shlex.join(f['command']) if f['command'] else 'Python only'}")
    return "\n".join(out)
