"""The proof of concept on Modal: download a GGUF into a volume, run one generation on an L4.

    modal run -m helpers.modal_poc --prompt "Hi"
    modal run -m helpers.modal_poc --prompt "Hi" --model Qwen/Qwen3-8B-GGUF --quant Q5_K_M --n-predict 256 \\
        --args "--temp 0.6 --top-p 0.95"

Two functions, called one after the other by the local entrypoint:

1. ``download_model_file`` (:mod:`helpers.modal_download`, a CPU container) puts the file in
   the ``llamacpp-cache`` volume, or finds it there;
2. ``model_inference`` (a GPU container) runs ``llama-completion`` through
   :func:`helpers.runtime.run_completion` — the very function the local backend uses —
   streams the text to the logs, and stores a JSON record in the ``llamacpp-results`` volume.

The entrypoint prints the text and llama.cpp's speed figures, and keeps a copy of the record
under ``./results``. The generation is non-interactive (``llama-completion --no-conversation``,
no keyboard attached): unlike a chat-mode ``llama-cli``, it can never sit waiting for input in
a container that has none while the GPU is billed.

Cost: the first run builds the CUDA image (10–15 minutes, once); after that a run holds an L4
for about a minute, a few cents (``helpers.gpus`` has the prices).
"""

from __future__ import annotations

import shlex

import modal

from helpers import config
from helpers.modal_common import MINUTES, SETTINGS, inference_image, model_volume, results_volume
from helpers.modal_download import app as download_app
from helpers.modal_download import download_model_file

#: Tokens generated when the command line does not say (``--n-predict``): enough to read the
#: decode speed off a steady stretch, few enough that a run cannot ramble on for minutes.
N_PREDICT = 256

app = modal.App(config.MODAL_POC_APP)
app.include(download_app)


@app.function(image=inference_image(), gpu=SETTINGS.gpu.spec, timeout=30 * MINUTES,
              volumes={config.MODEL_DIR: model_volume, config.RESULTS_DIR: results_volume})
def model_inference(model_file: str, prompt: str, n_predict: int = N_PREDICT, extra_args: list[str] | None = None,
                    store: bool = True, repo: str | None = None, quant: str | None = None) -> dict:
    """One generation with the model at ``/models/<model_file>``; returns (and stores) its record."""
    import os

    from helpers.results import make_record, save_record
    from helpers.runtime import run_completion

    result = run_completion(prompt, model=os.path.join(config.MODEL_DIR, model_file), n_predict=n_predict,
                            extra_args=tuple(extra_args or ()), stream=True)
    record = make_record(result, backend="modal", gpu=SETTINGS.gpu.spec, model=model_file, repo=repo, quant=quant)
    if store:
        save_record(record, config.RESULTS_DIR)
        results_volume.commit()
    return record


@app.local_entrypoint()
def main(prompt: str, model: str = SETTINGS.repo, quant: str = SETTINGS.quant, n_predict: int = N_PREDICT,
         args: str = "") -> None:
    """What ``modal run`` calls on your machine; ``args`` are extra llama-completion flags, as one string."""
    from helpers.hub import parse_repo_id
    from helpers.results import save_record

    parse_repo_id(model)  # fail here, before any container starts
    model_file = download_model_file.remote(model, quant)
    record = model_inference.remote(model_file, prompt, n_predict, shlex.split(args), True, model, quant)
    perf = record["perf"] or {}
    print(f"\n{record['text']}\n")
    print(f"decode {perf.get('eval_tokens_per_s')} tok/s, prompt {perf.get('prompt_tokens_per_s')} tok/s, "
          f"load {perf.get('load_ms')} ms")
    print(f"record {record['id']} stored in the '{config.RESULTS_VOLUME}' volume; local copy: "
          f"{save_record(record, 'results')}")
