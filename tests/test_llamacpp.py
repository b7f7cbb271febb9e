"""The pinned llama.cpp: source, build recipe (as data) and the cached binaries."""

from __future__ import annotations

import hashlib
import platform
import re
import subprocess
import time

import pytest

from helpers import config, llamacpp


def test_pin_is_consistent():
    assert len(config.LLAMA_CPP_COMMIT) == 40
    assert config.LLAMA_CPP_COMMIT.startswith("0c1e57098bba")
    assert config.LLAMA_CPP_SDIST_NAME == "llama_cpp_python-0.3.36.tar.gz"


def test_cmake_definitions_local_and_image():
    local = llamacpp.cmake_definitions()
    assert local["BUILD_SHARED_LIBS"] == "OFF" and local["CMAKE_BUILD_TYPE"] == "Release"
    assert local["LLAMA_BUILD_COMMIT"] == config.LLAMA_CPP_COMMIT[:7]
    assert local["LLAMA_USE_PREBUILT_UI"] == "OFF"
    assert "GGML_CUDA" not in local and "GGML_NATIVE" not in local  # platform defaults kept
    image = llamacpp.cmake_definitions(cuda=True, cuda_architectures="89", portable=True)
    assert image == {**local, "GGML_CUDA": "ON", "GGML_NATIVE": "OFF", "CMAKE_CUDA_ARCHITECTURES": "89"}


def test_commands_are_plain_argument_lists():
    cfg = llamacpp.configure_command("/src", "/b", {"B": "2", "A": "1"})
    assert cfg == ["cmake", "-S", "/src", "-B", "/b", "-DA=1", "-DB=2"]
    build = llamacpp.build_command("/b", jobs=3)
    assert build[:6] == ["cmake", "--build", "/b", "--config", "Release", "-j"] and build[6] == "3"
    assert build[-5:] == list(llamacpp.BUILD_TARGETS)
    assert set(llamacpp.BUILD_TARGETS) == {"llama-completion", "llama-cli", "llama-server",
                                           "llama-quantize", "llama-bench"}


def test_cache_key_follows_flags(monkeypatch):
    monkeypatch.setenv(llamacpp.CUDA_ENV, "0")
    cpu = llamacpp.BuildSpec.local()
    assert cpu == llamacpp.BuildSpec.local() and not cpu.cuda
    cuda = llamacpp.BuildSpec.local(cuda=True)
    assert cuda.cuda and cuda.key() != cpu.key()
    assert cpu.key().startswith(config.LLAMA_CPP_COMMIT[:12] + "-cpu-")


def test_cuda_detection_override(monkeypatch):
    monkeypatch.setenv(llamacpp.CUDA_ENV, "1")
    assert llamacpp.cuda_available()
    monkeypatch.setenv(llamacpp.CUDA_ENV, "off")
    assert not llamacpp.cuda_available()


def test_cache_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "c"))
    assert config.cache_dir() == (tmp_path / "c").resolve()
    assert llamacpp.bin_dir(llamacpp.BuildSpec.local(cuda=False)).is_relative_to(tmp_path)


def test_source_is_the_pinned_sdist(llama_bin):
    sdist = config.cache_dir() / "src" / config.LLAMA_CPP_SDIST_NAME
    assert hashlib.sha256(sdist.read_bytes()).hexdigest() == config.LLAMA_CPP_SDIST_SHA256
    tree = llamacpp.fetch_source()
    assert (tree / "tools" / "server" / "server.cpp").exists()
    assert (tree / "src" / "llama-quant.cpp").exists()


def test_built_binaries_report_the_pin(llama_bin):
    for target in llamacpp.BUILD_TARGETS:
        assert (llama_bin / target).exists()
    out = subprocess.run([str(llama_bin / "llama-server"), "--version"], capture_output=True, text=True,
                         timeout=60)
    assert config.LLAMA_CPP_COMMIT[:7] in out.stdout + out.stderr


def test_second_build_is_instant(llama_bin):
    started = time.monotonic()
    assert llamacpp.build(progress=False) == llama_bin
    assert time.monotonic() - started < 2
    assert llamacpp.binary("llama-quantize") == llama_bin / "llama-quantize"


def test_source_patches_are_applied_the_same_way_here_and_in_images(llama_bin, tmp_path):
    """The image's one-line shell command and the local Python path produce identical sources."""
    import tarfile

    with tarfile.open(config.cache_dir() / "src" / config.LLAMA_CPP_SDIST_NAME) as tar:
        originals = {p.path: tar.extractfile(llamacpp._SDIST_PREFIX + p.path).read().decode()
                     for p in llamacpp.SOURCE_PATCHES}
    for where in ("local", "image"):
        for path, text in originals.items():
            target = tmp_path / where / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    llamacpp.apply_patches(tmp_path / "local")
    command = llamacpp.patch_command(str(tmp_path / "image"))
    assert "\n" not in command  # one Dockerfile instruction
    subprocess.run(command, shell=True, check=True)
    patched_tree = llamacpp.fetch_source()
    for patch in llamacpp.SOURCE_PATCHES:
        local = (tmp_path / "local" / patch.path).read_text()
        assert local == (tmp_path / "image" / patch.path).read_text() != originals[patch.path]
        assert patch.new in local and (patched_tree / patch.path).read_text() == local
    subprocess.run(command, shell=True, check=True)  # applying twice changes nothing
    assert (tmp_path / "image" / patch.path).read_text() == local


def _amx_compile(source_tree, tmp_path):
    """Compile ggml's AMX kernels for an AMX CPU (any x86 machine can compile them) and return the assembly."""
    import shutil

    compiler = shutil.which("c++")
    if compiler is None or platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("needs an x86-64 C++ compiler: the AMX kernels only exist for x86")
    src = source_tree / "ggml" / "src"
    out = tmp_path / "mmq.s"
    args = [compiler, "-O3", "-std=gnu++17", "-march=x86-64-v4", "-mamx-tile", "-mamx-int8", "-mavx512vnni",
            "-DNDEBUG", "-D_GNU_SOURCE", f"-I{src}/..", f"-I{src}", f"-I{src}/ggml-cpu", f"-I{src}/../include",
            "-S", "-o", str(out), str(src / "ggml-cpu" / "amx" / "mmq.cpp")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "amx" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip(f"this compiler cannot target AMX: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out.read_text()


@pytest.mark.llama
def test_amx_tile_config_survives_the_optimizer(llama_bin, tmp_path):
    """Regression for the AMX crash: the tile config ldtilecfg loads must be the complete constant.

    Unpatched, GCC 12 at -O3 keeps only the palette byte of the stack copy (the rows and
    column widths are dropped), and every quantized model dies with SIGILL on AMX CPUs.
    """
    asm = _amx_compile(llamacpp.fetch_source(), tmp_path)
    (operand,) = re.findall(r"\bldtilecfg\s+(\S+)", asm)
    symbol = re.fullmatch(r"(\S+)\(%rip\)", operand)
    assert symbol, f"ldtilecfg reads {operand}: a stack copy, whose stores the compiler may drop"
    # the constant itself: palette 1, then the 8 column widths and 8 row counts the kernels use
    block = asm[asm.index(symbol.group(1) + ":"):]
    values = [int(v, 0) for v in re.findall(r"\.(?:byte|value|short)\s+(\S+)", block.split(".size", 1)[0])]
    assert [v for v in values if v] == [1, 64, 64, 32, 32, 64, 64, 64, 64, 8, 8, 16, 16, 16, 16, 16, 16]


def test_every_run_prints_everything(llama_bin, tiny_model):
    """Regression for the lost-log race (ggml-org/llama.cpp#22142) that our patch fixes."""
    from helpers.runtime import run_completion

    for _ in range(12):
        result = run_completion("Logs", model=tiny_model, n_predict=4, seed=1, stream=False)
        assert result.perf is not None and result.perf.eval_tokens == 3 and result.text
