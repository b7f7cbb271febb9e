"""``python -m helpers doctor``: a pre-flight check that says what to fix, in plain words.

Workshop rooms lose the first half hour to environments. Each check reports ok / warn / fail
with the fix; only a *fail* (something the course cannot work without) makes the command
exit non-zero. Modal, the Hub and a GPU are optional: without them the local backend runs.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

PACKAGES = ("modal", "huggingface_hub", "openai", "ipywidgets", "gguf", "numpy", "matplotlib", "pandas")


@dataclass
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    fix: str = ""


def run_checks(network: bool = True) -> list[Check]:
    from helpers import llamacpp
    from helpers.backend import modal_token_configured
    from helpers.config import API_KEY_ENV

    checks = []
    ok_py = sys.version_info >= (3, 11)
    checks.append(Check("python", "ok" if ok_py else "fail", sys.version.split()[0],
                        "" if ok_py else "install Python 3.11 or newer"))
    for name in PACKAGES:
        try:
            module = importlib.import_module(name)
            checks.append(Check(f"package {name}", "ok", getattr(module, "__version__", "installed")))
        except ImportError as exc:
            checks.append(Check(f"package {name}", "fail", str(exc), "run `make venv` (or pip install -e '.[dev]')"))
    for tool in ("cmake", "c++"):
        found = shutil.which(tool)
        checks.append(Check(f"tool {tool}", "ok" if found else "fail", found or "not on PATH",
                            "" if found else "apt-get install build-essential cmake (macOS: xcode-select --install; "
                            "brew install cmake)"))
    override = os.environ.get("LLAMACPP_COURSE_BIN")
    spec = llamacpp.BuildSpec.local()
    built = bool(override) or llamacpp.is_built(spec)
    where = f"{override} ($LLAMACPP_COURSE_BIN)" if override else str(llamacpp.bin_dir(spec))
    checks.append(Check("llama.cpp build", "ok" if built else "fail",
                        where if built else f"not built yet ({spec.key()})",
                        "" if built else "run `make llama` (about 6 minutes on 2 cores, once)"))
    checks.append(smoke_test() if built else Check("quantized generation", "fail", "skipped: llama.cpp is not built",
                                                   "run `make llama` first"))
    gpu = _gpu_name()
    checks.append(Check("local GPU", "ok" if gpu else "warn", gpu or "none visible (the CPU build is used)",
                        "" if gpu else "optional: a local NVIDIA GPU with nvcc gets a CUDA build"))
    token = modal_token_configured()
    checks.append(Check("Modal token", "ok" if token else "warn", "configured" if token else "not configured",
                        "" if token else "optional: `modal setup` to run the notebooks on Modal GPUs"))
    checks.append(_deploy_settings_check())
    key = bool(os.environ.get(API_KEY_ENV))
    checks.append(Check("server API key", "ok" if key else "warn", "set" if key else f"${API_KEY_ENV} not set",
                        "" if key else "needed to call a deployed server: see README, 'Run it on Modal'"))
    if network:
        from helpers.hub import hub_reachable

        hub = hub_reachable()
        checks.append(Check("Hugging Face Hub", "ok" if hub else "warn", "reachable" if hub else "not reachable",
                            "" if hub else "optional: offline, the course uses its synthetic model"))
    return checks


def _deploy_settings_check() -> Check:
    from helpers.modal_settings import ModalSettings

    try:
        settings = ModalSettings.from_env()
    except ValueError as exc:
        return Check("Modal deploy settings", "fail", str(exc), "fix or unset that LLAMACPP_COURSE_* variable")
    return Check("Modal deploy settings", "ok", f"GPU {settings.gpu.spec}, model {settings.repo} {settings.quant}")


def modal_checks() -> list[Check]:
    """What running the notebooks on Modal needs, checked before anything is billed.

    Looking up the deployed server and the volume are free API calls; nothing starts.
    """
    from helpers import config
    from helpers.backend import modal_token_configured

    checks = [_deploy_settings_check()]
    if not modal_token_configured():
        return checks + [Check("Modal token", "fail", "not configured", "run `modal setup`")]
    checks.append(Check("Modal token", "ok", "configured"))
    key = bool(os.environ.get(config.API_KEY_ENV))
    checks.append(Check("server API key", "ok" if key else "fail", "set" if key else f"${config.API_KEY_ENV} not set",
                        "" if key else f"export {config.API_KEY_ENV}=<the value in the '{config.API_KEY_SECRET}' "
                                       "Modal secret>"))
    if checks[0].status != "ok":
        return checks
    import modal

    from helpers.modal_common import SETTINGS, model_subdir

    try:
        files = [e.path for e in modal.Volume.from_name(config.MODEL_VOLUME).listdir(model_subdir(SETTINGS.repo))]
        from helpers.hub import select_gguf_files

        found = select_gguf_files([os.path.basename(f) for f in files], SETTINGS.quant)[0]
        checks.append(Check("model in the volume", "ok", f"{config.MODEL_VOLUME}: {found}"))
    except Exception as exc:  # noqa: BLE001 - any failure means: not there (yet)
        checks.append(Check("model in the volume", "fail", f"{SETTINGS.repo} {SETTINGS.quant}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                            "modal run -m helpers.modal_download"))
    try:
        url = modal.Function.from_name(SETTINGS.app_name, "serve").get_web_url()
        checks.append(Check("deployed server", "ok", url))
    except Exception as exc:  # noqa: BLE001
        checks.append(Check("deployed server", "fail", str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                            "modal deploy -m helpers.modal_server"))
    return checks


def smoke_test(n_predict: int = 4) -> Check:
    """Quantize the tiny synthetic model (Q4_K_M) and generate a few tokens on this machine.

    Quantized models take other code paths than F16 ones — on many CPUs llama.cpp repacks
    their weights for special kernels (AMX, AVX2/AVX-512) — so this catches a build that
    loads but cannot run the models the course uses.
    """
    from helpers.cpu_buffers import CpuFeatures
    from helpers.errors import CourseError
    from helpers.runtime import run_completion
    from helpers.synthetic import quantized_model

    cpu = CpuFeatures.detect().name
    try:
        result = run_completion("Smoke test", model=quantized_model("Q4_K_M"), n_predict=n_predict, seed=0,
                                stream=False, timeout_s=120)
    except CourseError as exc:
        crashed = getattr(exc, "returncode", None) is not None and exc.returncode < 0
        why = "llama.cpp crashed" if crashed else "llama.cpp failed"
        return Check("quantized generation", "fail", f"{why} on a Q4_K_M model ({cpu}): "
                     f"{str(exc).splitlines()[0]}",
                     "rebuild with `python -m helpers build --rebuild` (the course patches llama.cpp for "
                     "known CPU issues); if it persists, run without repacked weights: "
                     "`python -m helpers complete --model M --prompt P -- --no-repack`, and report the CPU model")
    tps = result.perf.eval_tokens_per_s if result.perf else None
    return Check("quantized generation", "ok", f"Q4_K_M, {n_predict} tokens"
                 + (f" at {tps:,.0f} tokens/s" if tps else "") + f" ({cpu})")


def _gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def report(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
    lines = [f"{mark[c.status]}  {c.name:<{width}}  {c.detail}" + (f"\n      -> {c.fix}" if c.fix else "")
             for c in checks]
    failed = sum(c.status == "fail" for c in checks)
    lines.append("all required checks passed" if not failed else f"{failed} required check(s) failed")
    return "\n".join(lines)
