"""The Modal apps, inspected offline: no token, no network, no GPU — only public definitions."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tarfile

import pytest

from helpers import config, llamacpp
from helpers.commands import server_args


def test_modal_modules_import_without_credentials(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["HOME"] = str(tmp_path)  # no ~/.modal.toml either
    code = "import helpers.modal_poc, helpers.modal_server; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_poc_functions():
    from helpers import modal_poc

    infer = modal_poc.model_inference.info()
    assert infer.gpus == [("L4", 1)]
    volumes = {p: v.name for p, v in infer.volumes.items()}
    assert volumes == {"/models": "llamacpp-cache", "/results": "llamacpp-results"}
    assert infer.timeout == 30 * 60
    download = modal_poc.download_model_file.info()
    assert download.gpus == [] and {p: v.name for p, v in download.volumes.items()} == {"/models": "llamacpp-cache"}


def test_server_function():
    from helpers import modal_server

    info = modal_server.serve.info()
    assert info.gpus == [("L4", 1)]
    assert info.concurrency_info.max_inputs == 32
    assert info.secrets == ["modal.Secret.from_name('llamacpp-api-key')"]
    assert info.web_info is not None
    assert info.timeout == 24 * 3600 and {p: v.name for p, v in info.volumes.items()} == {"/models": "llamacpp-cache"}
    assert modal_server.PORT == 8080 and modal_server.SCALEDOWN_S == 300 and modal_server.MIN_CONTAINERS == 0


def test_server_settings_come_from_the_environment(tmp_path):
    env = {**os.environ, "LLAMACPP_COURSE_GPU": "H100", "LLAMACPP_COURSE_MIN_CONTAINERS": "1",
           "LLAMACPP_COURSE_SCALEDOWN": "900", "LLAMACPP_COURSE_PUBLIC": "1"}
    code = ("import helpers.modal_server as s; i = s.serve.info(); "
            "print(i.gpus, i.secrets, s.MIN_CONTAINERS, s.SCALEDOWN_S)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[('H100', 1)] [] 1 900", out.stderr[-2000:]
    bad = subprocess.run([sys.executable, "-c", "import helpers.modal_server"], capture_output=True, text=True,
                         env={**os.environ, "LLAMACPP_COURSE_GPU": "RTX"}, timeout=120)
    assert bad.returncode != 0 and "is not a Modal GPU type; choose one of T4, L4" in bad.stderr


def test_modal_and_local_servers_run_the_same_command():
    """One builder: the container's llama-server line equals the local one for the same settings."""
    from helpers import modal_server

    remote = modal_server.llama_server_command("/models/x.gguf", api_key="k")
    local = server_args(llamacpp.IMAGE_BIN_DIR + "/llama-server", modal_server.server_settings("/models/x.gguf", "k"))
    assert remote == local
    assert remote[remote.index("--host") + 1] == "0.0.0.0" and remote[remote.index("--port") + 1] == "8080"
    assert remote[remote.index("--parallel") + 1] == "8" and remote[remote.index("--ctx-size") + 1] == "65536"
    assert remote[-1] == "--backend-sampling"
    assert "k" not in remote  # the key travels in the environment, not on the command line


def test_image_recipe_uses_the_pin_and_the_shared_flags():
    script = llamacpp.image_build_script("89")
    joined = "\n".join(script)
    assert f"llama-cpp-python=={config.LLAMA_CPP_PYTHON_VERSION}" in script[0]
    assert config.LLAMA_CPP_SDIST_SHA256 in script[1]
    defs = llamacpp.cmake_definitions(cuda=True, cuda_architectures="89", portable=True, prebuilt_web_ui=True)
    configure = shlex.split(next(c for c in script if c.startswith("cmake -S")))
    assert configure == llamacpp.configure_command(llamacpp.IMAGE_SOURCE_DIR, llamacpp.IMAGE_BUILD_DIR, defs)
    assert "--target " + " ".join(llamacpp.BUILD_TARGETS) in joined
    assert "-DLLAMA_BUILD_NUMBER=11312" in joined and "-DGGML_CUDA=ON" in joined


def test_image_source_steps_produce_the_local_tree(llama_bin, tmp_path):
    """Run the image's unpack-and-patch commands here (minus the download) and compare."""
    import shutil

    work, dest = tmp_path / "sdist", tmp_path / "opt" / "src"
    work.mkdir()
    shutil.copy(config.cache_dir() / "src" / config.LLAMA_CPP_SDIST_NAME, work)
    for command in llamacpp.source_fetch_script(str(dest), work=str(work))[1:]:
        subprocess.run(command, shell=True, check=True, cwd=tmp_path)
    local = llamacpp.fetch_source()
    for patch in llamacpp.SOURCE_PATCHES:
        assert (dest / patch.path).read_text() == (local / patch.path).read_text()
    with tarfile.open(config.cache_dir() / "src" / config.LLAMA_CPP_SDIST_NAME) as tar:
        expected = {m.name.removeprefix(llamacpp._SDIST_PREFIX) for m in tar.getmembers()
                    if m.name.startswith(llamacpp._SDIST_PREFIX) and m.isfile()}
    assert {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()} == expected


def test_model_file_lookup_in_the_volume(tmp_path):
    from helpers.modal_common import find_model_file

    folder = tmp_path / "Qwen--Qwen3-8B-GGUF"
    folder.mkdir()
    (folder / "Qwen3-8B-Q5_K_M.gguf").write_bytes(b"")
    assert find_model_file(str(tmp_path), "Qwen/Qwen3-8B-GGUF", "q5_k_m") == str(folder / "Qwen3-8B-Q5_K_M.gguf")
    with pytest.raises(FileNotFoundError, match="not in the 'llamacpp-cache' volume yet.*modal run -m helpers"):
        find_model_file(str(tmp_path), "Qwen/Qwen3-4B-GGUF", "Q5_K_M")
