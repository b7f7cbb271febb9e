# # My llama.cpp server on Modal
#
# Qwen3-8B (GGUF, Q5_K_M) in llama-server on an L4, behind HTTPS and an API key.
#
#     modal run my_llama_server.py                # once: the model into the Volume, on a CPU container
#     modal deploy my_llama_server.py             # the endpoint; containers scale to zero
#     modal app stop --yes my-llama-server        # teardown

import subprocess

import modal

from helpers import llamacpp  # the course's pinned llama.cpp recipe: your local build's source, patches, flags

MINUTES = 60  # Modal counts in seconds
PORT = 8080
REPO, FILE = "Qwen/Qwen3-8B-GGUF", "Qwen3-8B-Q5_K_M.gguf"
MODEL_DIR = "/models"
MODEL_PATH = f"{MODEL_DIR}/Qwen--Qwen3-8B-GGUF/{FILE}"  # where the course's own download puts it, too

# ## Two images: a small one that downloads, a CUDA one that serves
download_image = (modal.Image.debian_slim(python_version="3.11").uv_pip_install("huggingface-hub>=0.34")
                  .add_local_python_source("helpers"))  # every container runs this file's imports: helpers too
server_image = (
    modal.Image.from_registry("nvidia/cuda:12.9.1-devel-ubuntu22.04", add_python="3.11")  # has nvcc
    .entrypoint([])  # no CUDA banner script
    .apt_install("build-essential", "cmake", "libssl-dev", "libgomp1")
    .run_commands(llamacpp.image_build_command("89"))  # 89: the L4's architecture; ~10 min once, then cached
    .add_local_python_source("helpers")  # Modal mounts only this file, not the packages it imports
)

# ## A Volume: the model, downloaded once, read by every container
volume = modal.Volume.from_name("llamacpp-cache", create_if_missing=True)
app = modal.App("my-llama-server")


@app.function(image=download_image, volumes={MODEL_DIR: volume}, timeout=30 * MINUTES)
def download() -> str:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(REPO, FILE, local_dir=f"{MODEL_DIR}/Qwen--Qwen3-8B-GGUF")  # skipped if there
    volume.commit()  # containers started from now on see the file (running ones only after volume.reload())
    return path


# ## The server: what the container runs (modal-plan shows COMMANDS offline)
COMMANDS = {"serve": [
    "/opt/llama.cpp/bin/llama-server", "--model", MODEL_PATH,
    "--host", "0.0.0.0", "--port", str(PORT),  # every interface: Modal's proxy is outside the container
    "--parallel", "8", "--ctx-size", str(8 * 8192),  # 8 slots; --ctx-size is their total
    "--n-gpu-layers", "all", "--flash-attn", "on",
    "--alias", "qwen3-8b",  # the model name clients send
    "--cache-ram", "0", "--metrics", "--backend-sampling",
]}


@app.function(image=server_image, gpu="L4", volumes={MODEL_DIR: volume}, timeout=24 * 60 * MINUTES,
              secrets=[modal.Secret.from_name("llamacpp-api-key", required_keys=["LLAMA_API_KEY"])],
              scaledown_window=5 * MINUTES)  # idle minutes before the GPU is released
@modal.concurrent(max_inputs=32)  # requests one container takes at once; more start another container
@modal.web_server(port=PORT, startup_timeout=10 * MINUTES)  # HTTPS -> PORT once it accepts connections
def serve() -> None:
    subprocess.Popen(COMMANDS["serve"])  # llama-server reads LLAMA_API_KEY, which the Secret sets


@app.local_entrypoint()
def main() -> None:
    print("model in the volume:", download.remote())
