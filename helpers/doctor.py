"""``python -m helpers doctor``: a pre-flight check that says what to fix, in plain words.

Workshop rooms lose the first half hour to environments. Each check reports ok / warn / fail
with the fix; only a *fail* (something the course cannot work without) makes the command
exit non-zero. Modal, the Hub and a GPU are optional: without them the local backend runs.
"""

from __future__ import annotations

import importlib
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
    spec = llamacpp.BuildSpec.local()
    built = llamacpp.is_built(spec)
    checks.append(Check("llama.cpp build", "ok" if built else "fail",
                        str(llamacpp.bin_dir(spec)) if built else f"not built yet ({spec.key()})",
                        "" if built else "run `make llama` (about 6 minutes on 2 cores, once)"))
    gpu = _gpu_name()
    checks.append(Check("local GPU", "ok" if gpu else "warn", gpu or "none visible (the CPU build is used)",
                        "" if gpu else "optional: a local NVIDIA GPU with nvcc gets a CUDA build"))
    token = modal_token_configured()
    checks.append(Check("Modal token", "ok" if token else "warn", "configured" if token else "not configured",
                        "" if token else "optional: `modal setup` to run the notebooks on Modal GPUs"))
    import os

    key = bool(os.environ.get(API_KEY_ENV))
    checks.append(Check("server API key", "ok" if key else "warn", "set" if key else f"${API_KEY_ENV} not set",
                        "" if key else "needed to call a deployed server: see README, 'Run it on Modal'"))
    if network:
        from helpers.hub import hub_reachable

        hub = hub_reachable()
        checks.append(Check("Hugging Face Hub", "ok" if hub else "warn", "reachable" if hub else "not reachable",
                            "" if hub else "optional: offline, the course uses its synthetic model"))
    return checks


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
