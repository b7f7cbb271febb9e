"""Put a GGUF model from the Hugging Face Hub into the ``llamacpp-cache`` volume, on a CPU container.

    modal run -m helpers.modal_download                                     # Qwen/Qwen3-8B-GGUF, Q5_K_M
    modal run -m helpers.modal_download --model Qwen/Qwen3-8B-GGUF --quant Q8_0

Downloading 6 GB is I/O, not compute, so it runs on a cheap CPU container, never on a GPU
billed by the second. The app holds nothing but the download, so running it builds only the
small download image and needs no API-key secret. The PoC app includes this function (it
downloads before it generates); the server reads what it left in the volume. A file already
there is not downloaded again.

For a gated repository (or higher Hub rate limits), put your Hub token in a Modal Secret and
name it when you run: ``LLAMACPP_COURSE_HF_SECRET=my-hf-secret`` (the Secret holds ``HF_TOKEN``).
"""

from __future__ import annotations

import os

import modal

from helpers import config
from helpers.modal_common import MINUTES, SETTINGS, download_image, hf_secrets, model_subdir, model_volume

app = modal.App(config.MODAL_DOWNLOAD_APP)


@app.function(image=download_image(), volumes={config.MODEL_DIR: model_volume}, secrets=hf_secrets(),
              timeout=30 * MINUTES)
def download_model_file(repo_id: str, quant: str, revision: str | None = None) -> str:
    """Hub -> model volume (skipped when the file is already there); returns the path in the volume."""
    from helpers.hub import download_gguf

    path = download_gguf(repo_id, quant, dest=os.path.join(config.MODEL_DIR, model_subdir(repo_id)), revision=revision)
    model_volume.commit()  # make the new file visible to other containers now
    return os.path.relpath(path, config.MODEL_DIR)


@app.local_entrypoint()
def main(model: str = SETTINGS.repo, quant: str = SETTINGS.quant) -> None:
    """What ``modal run`` calls on your machine: check the repository id, then download remotely."""
    from helpers.hub import parse_repo_id

    parse_repo_id(model)  # a malformed id fails here, before any container starts
    path = download_model_file.remote(model, quant)
    print(f"{config.MODEL_VOLUME}:/{path} is ready.")
