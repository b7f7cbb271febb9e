"""What both Modal apps share: images, volumes, the API-key secret, and the model download.

Importing this module needs no Modal account: images, volumes and secrets are *descriptions*
that Modal resolves only when an app runs or deploys. That is what lets CI import and
inspect every definition offline.

Two images, on purpose:

* the **download image** is a small Debian with ``huggingface_hub``. Downloading 6 GB is I/O,
  not compute, so it runs on a cheap CPU container, never on a GPU billed by the second;
* the **inference image** is NVIDIA's CUDA *devel* image (it has ``nvcc``) on which we build
  the pinned llama.cpp with exactly the local build's source, patch, flags and targets, plus
  CUDA (:func:`helpers.llamacpp.image_build_script`). The course's Python package is added
  last, so editing ``helpers`` never rebuilds llama.cpp.
"""

from __future__ import annotations

import os

import modal

from helpers import config, llamacpp

MINUTES = 60
HUB_PACKAGES = ("huggingface-hub>=0.34",)
INFERENCE_APT_PACKAGES = ("build-essential", "cmake", "git", "curl", "libssl-dev", "libgomp1")

model_volume = modal.Volume.from_name(config.MODEL_VOLUME, create_if_missing=True)
results_volume = modal.Volume.from_name(config.RESULTS_VOLUME, create_if_missing=True)


def download_image() -> modal.Image:
    return (
        modal.Image.debian_slim(python_version="3.11")
        .uv_pip_install(*HUB_PACKAGES)
        .env({"HF_XET_HIGH_PERFORMANCE": "1"})  # parallel chunked downloads for multi-GB files
        .add_local_python_source("helpers")
    )


def inference_image(gpu: str, env: dict[str, str] | None = None) -> modal.Image:
    """CUDA image with llama.cpp built for ``gpu``'s architecture (override: $LLAMACPP_COURSE_CUDA_ARCH)."""
    arch = os.environ.get("LLAMACPP_COURSE_CUDA_ARCH") or config.CUDA_ARCHITECTURES[gpu]
    return (
        modal.Image.from_registry(config.CUDA_BASE_IMAGE, add_python="3.11")
        .apt_install(*INFERENCE_APT_PACKAGES)
        .run_commands(*llamacpp.image_build_script(arch))  # ~10 min once; cached afterwards
        .entrypoint([])  # drop the CUDA image's banner script
        .uv_pip_install(*HUB_PACKAGES)
        .env({"LLAMACPP_COURSE_BIN": llamacpp.IMAGE_BIN_DIR, "GGML_NO_BACKTRACE": "1", **(env or {})})
        .add_local_python_source("helpers")
    )


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
            f"modal run -m helpers.modal_server --model {repo_id} --quant {quant}"
        )
    return os.path.join(folder, select_gguf_files(files, quant)[0])


#: Not deployed on its own: both apps ``include`` it, so the download exists once.
app = modal.App(config.MODAL_COMMON_APP)


@app.function(image=download_image(), volumes={config.MODEL_DIR: model_volume}, timeout=30 * MINUTES)
def download_model_file(repo_id: str, quant: str, revision: str | None = None) -> str:
    """Hub -> model volume (skipped when the file is already there); returns the path in the volume."""
    from helpers.hub import download_gguf

    path = download_gguf(repo_id, quant, dest=os.path.join(config.MODEL_DIR, model_subdir(repo_id)), revision=revision)
    model_volume.commit()  # make the new file visible to other containers now
    return os.path.relpath(path, config.MODEL_DIR)
