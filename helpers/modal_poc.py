"""The proof of concept on Modal: download a GGUF into a volume, run one generation on an L4.

    modal run -m helpers.modal_poc --prompt "Hi"
    modal run -m helpers.modal_poc --prompt "Hi" --model Qwen/Qwen3-8B-GGUF --quant Q5_K_M --n-predict 256 \\
        --args "--temp 0.6 --top-p 0.95"

Flow: ``download_model_file`` (CPU container, skipped when cached; :mod:`helpers.modal_download`)
puts the file in the ``llamacpp-cache`` volume; ``model_inference`` (GPU container) runs
``llama-completion`` through :func:`helpers.runtime.run_completion` — the very function the
local backend uses — streams the text to the logs, and stores a JSON record in the
``llamacpp-results`` volume. The local entrypoint prints a summary and keeps a copy of the
record under ``./results``.

Unlike a chat-mode ``llama-cli`` call, the generation is non-interactive: it can never sit
waiting for a keyboard in a container that has none.
"""

from __future__ import annotations

import shlex

import modal

from helpers import config
from helpers.modal_common import MINUTES, SETTINGS, inference_image, model_volume, results_volume
from helpers.modal_download import app as download_app
from helpers.modal_download import download_model_file

#: Tokens generated when the command line does not say (``--n-predict``).
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
