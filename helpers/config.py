"""Pinned versions, defaults and cache locations — the single source of truth.

Everything that must agree between the local runtime and the Modal image (which llama.cpp,
which model, which quant) is named here once. Changing the llama.cpp pin means changing
``LLAMA_CPP_PYTHON_VERSION`` *and* the two values derived from its sdist below; the tests
check that the downloaded sdist really matches them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

#: llama.cpp is taken from the sdist of llama-cpp-python on PyPI, because PyPI is reachable
#: from every machine the course runs on, including ones without GitHub access, and the sdist
#: vendors one exact llama.cpp commit.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
#: The llama.cpp commit vendored in that sdist (``vendor/llama.cpp``).
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
#: llama.cpp's release number for that commit (tag ``b11312``). The sdist carries no git
#: history, so we pass it to cmake; llama-server reports it and its web UI bundle is keyed by it.
LLAMA_CPP_BUILD_NUMBER = 11312
#: sha256 of ``llama_cpp_python-0.3.36.tar.gz`` as served by PyPI; checked after download.
LLAMA_CPP_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"

#: The course's working example: the model, the quantization and the GPU it targets.
DEFAULT_HF_REPO = "Qwen/Qwen3-8B-GGUF"
DEFAULT_QUANT = "Q5_K_M"
DEFAULT_GPU = "L4"

#: The course's recorded measurements (GPU runs, CUDA start-up): read by the helpers, never copied into them.
BENCHMARKS_DIR = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"

#: Environment variable that moves every cache (llama.cpp source and builds, models).
CACHE_ENV = "LLAMACPP_COURSE_CACHE"


def cache_dir() -> Path:
    """Root of the course's caches, outside the repository.

    Builds take minutes and models gigabytes, so they live in the user's cache directory
    (``$XDG_CACHE_HOME`` or ``~/.cache``) and survive a fresh clone; ``$LLAMACPP_COURSE_CACHE``
    overrides the location (CI, shared workshop machines, a bigger disk).
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser().resolve() / "llamacpp-course"


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """An exclusive file lock in the cache, so two processes never build or unpack into the same folder."""
    lock_dir = cache_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def models_dir() -> Path:
    """Where downloaded and synthetic GGUF files are kept."""
    return cache_dir() / "models"


def results_dir() -> Path:
    """Local mirror of the Modal results volume: one JSON record per inference."""
    return cache_dir() / "results"


# --- Modal ------------------------------------------------------------------------------
MODAL_POC_APP = "llamacpp-poc"
MODAL_SERVER_APP = "llamacpp-server"
MODAL_DOWNLOAD_APP = "llamacpp-download"
MODAL_HELLO_APP = "llamacpp-hello"
#: Persistent volumes: downloaded GGUF files, and one JSON record per PoC inference.
MODEL_VOLUME = "llamacpp-cache"
RESULTS_VOLUME = "llamacpp-results"
MODEL_DIR = "/models"
RESULTS_DIR = "/results"
#: The Modal Secret holding LLAMA_API_KEY for the server (see README, "Run it on Modal").
API_KEY_SECRET = "llamacpp-api-key"
API_KEY_ENV = "LLAMA_API_KEY"
#: CUDA *devel* image (nvcc for building llama.cpp). 12.9 is the first CUDA that compiles for
#: sm_103, the B300 a "B200+" request may land on; it also covers every other Modal GPU.
CUDA_BASE_IMAGE = "nvidia/cuda:12.9.1-devel-ubuntu22.04"
def env_int(name: str, default: int, env: Mapping[str, str] | None = None, minimum: int | None = None) -> int:
    """An integer setting from the environment, with a clear error for non-numbers."""
    value = (os.environ if env is None else env).get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"${name} must be a whole number, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"${name} must be at least {minimum}, got {number}")
    return number
