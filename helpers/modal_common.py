"""What the course's Modal apps share: the deploy settings, two images, two volumes, the model lookup.

Importing this module needs no Modal account: images, volumes and secrets are *descriptions*
that Modal resolves only when an app runs or deploys. That is what lets the course read every
definition offline (``python -m helpers modal-plan``).

Two images, on purpose:

* the **download image** is a small Debian with ``huggingface_hub``. Downloading 6 GB is I/O,
  not compute, so it runs on a cheap CPU container, never on a GPU billed by the second;
* the **inference image** is NVIDIA's CUDA *devel* image (it has ``nvcc``) on which we build
  the pinned llama.cpp with exactly the local build's source, patches, flags and targets, plus
  CUDA (:func:`helpers.llamacpp.image_build_command`), in one layer that keeps only the
  binaries. The deploy settings follow as ``ENV`` lines (see :mod:`helpers.modal_settings`),
  and the course's Python package comes last, so editing ``helpers`` never rebuilds llama.cpp.
"""

from __future__ import annotations

import os

import modal

from helpers import config, llamacpp
from helpers.modal_settings import ModalSettings

#: Modal takes timeouts in seconds; ``30 * MINUTES`` reads better than ``1800``.
MINUTES = 60
#: Read once, here, from the deploying machine's environment — and, inside a container, from
#: the ENV lines the images below carry, so both sides agree. A bad value stops `modal run` /
#: `modal deploy` with one line that names the variable, before anything is built.
try:
    SETTINGS = ModalSettings.from_env()
except ValueError as exc:
    raise SystemExit(f"error: {exc}") from None

#: The Hugging Face Hub client, installed with ``uv`` (fast, cached) in both images, so that
#: :mod:`helpers.hub` and :mod:`helpers.models` work in a container as they do locally.
HUB_PACKAGES = ("huggingface-hub>=0.34",)
#: The memory calculator's one dependency (the ggml types' sizes), pinned as in pyproject.toml: the
#: server in router mode reads each model's header to check how many fit the GPU together.
CALCULATOR_PACKAGES = ("gguf==0.19.0",)
#: Compilers and cmake for the build; OpenSSL so llama.cpp's HTTPS client works as it does
#: locally; the OpenMP runtime the CPU backend links against.
INFERENCE_APT_PACKAGES = ("build-essential", "cmake", "libssl-dev", "libgomp1")

#: Persistent disks that outlive containers: the downloaded models (read by the PoC and the
#: server), and one JSON record per PoC run. Created on first use.
model_volume = modal.Volume.from_name(config.MODEL_VOLUME, create_if_missing=True)
results_volume = modal.Volume.from_name(config.RESULTS_VOLUME, create_if_missing=True)


def settings_env(settings: ModalSettings = SETTINGS) -> dict[str, str]:
    """The ENV every course image carries: the deploy settings, and no debugger on crashes."""
    return {**settings.to_env(), "GGML_NO_BACKTRACE": "1"}


def download_image(settings: ModalSettings = SETTINGS) -> modal.Image:
    """Slim Debian with the Hub client: a minute to build, nothing to compile."""
    return (
        modal.Image.debian_slim(python_version="3.11")
        .uv_pip_install(*HUB_PACKAGES)
        .env({"HF_XET_HIGH_PERFORMANCE": "1", **settings_env(settings)})  # parallel chunked downloads
        .add_local_python_source("helpers")
    )


def inference_image(settings: ModalSettings = SETTINGS) -> modal.Image:
    """CUDA image with llama.cpp built for ``settings.cuda_architectures``."""
    return (
        modal.Image.from_registry(config.CUDA_BASE_IMAGE, add_python="3.11")
        .entrypoint([])  # drop the CUDA image's banner script
        .apt_install(*INFERENCE_APT_PACKAGES)
        .run_commands(llamacpp.image_build_command(settings.cuda_architectures))  # ~10 min once, then cached
        .uv_pip_install(*HUB_PACKAGES, *CALCULATOR_PACKAGES)
        .env({"LLAMACPP_COURSE_BIN": llamacpp.IMAGE_BIN_DIR, **settings_env(settings)})
        .add_local_python_source("helpers")
    )


def hf_secrets(settings: ModalSettings = SETTINGS) -> list[modal.Secret]:
    """The optional Hub token: only when ``$LLAMACPP_COURSE_HF_SECRET`` names a Modal Secret.

    Public repositories need none; a missing Secret would stop every deploy, so it is opt-in.
    """
    if not settings.hf_secret:
        return []
    return [modal.Secret.from_name(settings.hf_secret, required_keys=["HF_TOKEN"])]


def model_subdir(repo_id: str) -> str:
    """Folder of a repo's files inside the model volume (``Qwen--Qwen3-8B-GGUF``)."""
    from helpers.hub import parse_repo_id

    org, name = parse_repo_id(repo_id)
    return f"{org}--{name}"


def find_model_file(root: str, repo_id: str, quant: str) -> str:
    """Path of the GGUF (first part) for ``quant`` already in the volume; clear error if absent."""
    from helpers.hub import select_gguf_files

    folder = os.path.join(root, model_subdir(repo_id))
    files = []
    for dirpath, _, names in os.walk(folder):
        files += [os.path.relpath(os.path.join(dirpath, n), folder) for n in names]
    if not files:
        raise FileNotFoundError(
            f"{repo_id} is not in the '{config.MODEL_VOLUME}' volume yet. Download it first: "
            f"modal run -m helpers.modal_download --model {repo_id} --quant {quant}"
        )
    return os.path.join(folder, select_gguf_files(files, quant)[0])
