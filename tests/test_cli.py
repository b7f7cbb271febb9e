"""The command line: one-line errors (exit status 2, no traceback) and the calculators' --model.

Every test here runs ``python -m helpers`` as a learner would, in a subprocess. None of them
needs the llama.cpp build or a network: bad input is refused before anything is built or
downloaded, and the calculators read shapes from built-in configs and GGUF headers.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys

import pytest

from helpers.gpus import MODAL_GPU_TYPES
from helpers.memory import KV_TYPES, memory_breakdown
from helpers.model_shape import KNOWN_CONFIGS, known_shape
from helpers.models import resolve_shape
from helpers.quant import PRESETS
from helpers.synthetic import TINY, write_synthetic_model

from .test_gguf_header import QWEN3_8B_CONFIG

QWEN = ("--model", "Qwen3-8B", "--quant", "Q5_K_M")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "helpers", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def _json(*args: str) -> dict:
    out = _cli(*args, "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def _closed_port() -> int:
    """A local port nothing listens on (just released by us)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad inputs on disk: a partial config, files that are not GGUF, a damaged GGUF header."""
    root = tmp_path_factory.mktemp("cli")
    (root / "partial.json").write_text(json.dumps({"model_type": "qwen3", "hidden_size": 4096}))
    no_ctx = {k: v for k, v in QWEN3_8B_CONFIG.items() if k != "max_position_embeddings"}
    (root / "no_ctx.json").write_text(json.dumps(no_ctx))
    (root / "config.json").write_text(json.dumps(QWEN3_8B_CONFIG))
    (root / "text.gguf").write_text("not a model\n")
    (root / "empty.gguf").write_bytes(b"")
    (root / "zip.gguf").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    # GGUF magic, version 3, 0 tensors, 1 key whose name claims 1 TiB: must fail fast, not read on
    (root / "damaged.gguf").write_bytes(b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1 << 40))
    return root


def _bad_inputs(root, port):  # noqa: ANN001, ANN202 - (arguments, what the one line must say)
    mem = ("memory", *QWEN)
    return [
        (("memory", "--config", str(root / "partial.json"), "--quant", "Q5_K_M"),
         "lacks intermediate_size, num_hidden_layers, num_attention_heads, vocab_size"),
        (("size", "--config", str(root / "nope.json"), "--quant", "Q5_K_M"), "no config.json"),
        (("size", "--config", str(root / "text.gguf"), "--quant", "Q5_K_M"), "not a JSON config"),
        (("memory", "--model", "Qwen3-8B", "--quant", "Q9"), "unknown quantization 'Q9'; choose one of: F32"),
        (("size", "--model", "Qwen3-8B", "--quant", "Q9"), ", ".join(PRESETS)),
        ((*mem, "--ctx", "-1"), "n_ctx (--ctx) is -1; give a whole number >= 0"),
        ((*mem, "--ctx", "many"), "argument --ctx: invalid int value"),
        (("memory", "--config", str(root / "no_ctx.json"), "--quant", "Q5_K_M", "--ctx", "0"),
         "trained context"),
        ((*mem, "--ngl", "-1"), "n_gpu_layers (--ngl) is -1"),
        ((*mem, "--ubatch", "0"), "n_ubatch (--ubatch) is 0"),
        ((*mem, "--ubatch", "-512"), "n_ubatch (--ubatch) is -512"),
        ((*mem, "--gpu", "RTX9090"), "unknown GPU 'RTX9090'; Modal GPU types: " + ", ".join(MODAL_GPU_TYPES)),
        ((*mem, "--kv-type", "q3"), "invalid choice: 'q3' (choose from " + ", ".join(map(repr, KV_TYPES))),
        ((*mem, "--kv-type", "q8_0", "--no-flash-attn"), "quantized V cache requires flash_attn"),
        (("memory", "--gguf", str(root / "text.gguf"), "--quant", "Q5_K_M"), "not a GGUF file"),
        (("memory", "--gguf", str(root / "empty.gguf"), "--quant", "Q5_K_M"), "truncated or not a GGUF file"),
        (("memory", "--model", str(root / "zip.gguf"), "--quant", "Q5_K_M"), "no 'GGUF' magic"),
        (("size", "--model", str(root / "damaged.gguf"), "--quant", "Q5_K_M"), "is not a readable GGUF file"),
        (("memory", "--gguf", str(root / "missing.gguf"), "--quant", "Q5_K_M"), "no GGUF file at"),
        (("memory", "--model", str(root / "missing.gguf"), "--quant", "Q5_K_M"), "model file not found"),
        (("memory", "--model", "foo:Q4", "--quant", "Q5_K_M"), "write org/name:QUANT"),
        (("memory", "--model", "a/b/c:Q4_K_M", "--quant", "Q5_K_M"), "write org/name:QUANT"),
        (("memory", "--model", "Qwen/Qwen3-8B-GGUF:", "--quant", "Q5_K_M"), "names no quantization"),
        (("complete", "--prompt", "Hi", "--model", "foo:Q4"), "write org/name:QUANT"),
        (("memory", "--model", "Qwen9-1T", "--quant", "Q5_K_M"), "choose a known config (" + ", ".join(KNOWN_CONFIGS)),
        (("memory", "--quant", "Q5_K_M"), "one of the arguments --model --config --gguf is required"),
        (("memory", *QWEN, "--config", str(root / "config.json")), "not allowed with argument --model"),
        (("complete", "--prompt", ""), "prompt is empty"),
        (("complete", "--prompt", "Hi", "--model", str(root / "text.gguf")),
         f"{root / 'text.gguf'} is not a GGUF file (it starts with b'not ', not b'GGUF'); give a .gguf model file"),
        (("serve", "--model", str(root / "zip.gguf")),
         f"{root / 'zip.gguf'} is not a GGUF file (it starts with b'PK\\x03\\x04', not b'GGUF')"),
        (("serve", "--model", str(root / "empty.gguf")), f"{root / 'empty.gguf'} is not a GGUF file (it is empty)"),
        (("bench", "--url", f"http://127.0.0.1:{port}", "--levels", "1", "--tokens", "4"),
         f"no server answers at http://127.0.0.1:{port}"),
        (("bench", "--url", "127.0.0.1:8080"), "is not a server address; give its base URL"),
        (("bench", "--url", "http://127.0.0.1:8080", "--levels", "1,x"), "'x' in '1,x' is not a concurrency level"),
        (("bench", "--url", "http://127.0.0.1:8080", "--levels", "0"), "'0' in '0' is not a concurrency level"),
        (("bench", "--url", "http://127.0.0.1:8080", "--levels", ""), "is not a concurrency level"),
        (("bench", "--url", "http://127.0.0.1:8080", "--tokens", "0"), "0 is too small; give a whole number >= 1"),
        (("bench", "--url", "http://127.0.0.1:8080", "--tokens", "-5"), "argument --tokens: -5 is too small"),
        (("no-such-command",), "invalid choice: 'no-such-command'"),
    ]


def test_bad_input_is_one_line_and_exit_status_2(files):
    port = _closed_port()
    for args, message in _bad_inputs(files, port):
        out = _cli(*args)
        lines = out.stderr.splitlines()
        assert out.returncode == 2, (args, out.returncode, out.stderr[-2000:])
        assert "Traceback" not in out.stderr, (args, out.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, out.stderr)
        assert message in lines[0], (args, lines[0])
        assert out.stdout == "", (args, out.stdout)


def test_unreachable_server_suggests_starting_one():
    out = _cli("bench", "--url", f"http://127.0.0.1:{_closed_port()}", "--levels", "1")
    assert out.returncode == 2 and "python -m helpers serve" in out.stderr


def test_memory_by_name_matches_the_article_on_the_l4(files):
    est = _json("memory", *QWEN, "--ctx", "4096", "--gpu", "L4")
    assert round(est["gpu_model_mib"]) == 5166 and est["context_mib"] == 576.0 and int(est["compute_mib"]) == 304
    assert (round(est["host_model_mib"]), est["n_ctx"], est["gpu"], est["fits"]) == (408, 4096, "L4", True)
    # One resolver: the built-in name (any case) and the same config.json give the same numbers.
    assert _json("memory", "--model", "qwen3-8B", "--quant", "Q5_K_M", "--gpu", "L4") == est
    assert _json("memory", "--config", str(files / "config.json"), "--quant", "Q5_K_M", "--gpu", "L4") == est
    text = _cli("memory", *QWEN, "--ctx", "4096", "--gpu", "L4")
    assert text.returncode == 0 and text.stdout.startswith(
        "L4, 4,096 tokens: model 5,166 + context 576 + compute 304 + CUDA 300 = 6,347 MiB (host model 408 MiB)")


def test_ctx_0_is_the_trained_context():
    est = _json("memory", *QWEN, "--ctx", "0", "--gpu", "L4")
    assert est["n_ctx"] == 40960 == KNOWN_CONFIGS["Qwen3-8B"]["max_position_embeddings"]
    assert est["context_mib"] == 576.0 * 10  # 10x the tokens of 4,096
    assert est == _json("memory", *QWEN, "--ctx", "40960", "--gpu", "L4")


def test_ngl_0_keeps_the_model_on_the_host():
    full = _json("memory", *QWEN, "--gpu", "L4", "--cpu", "none")
    host = _json("memory", *QWEN, "--gpu", "L4", "--cpu", "none", "--ngl", "0")
    assert host["gpu_model_mib"] == 0 and host["context_mib"] == 0
    assert host["host_model_mib"] == pytest.approx(full["gpu_model_mib"] + full["host_model_mib"], rel=1e-4)
    assert host["total_gpu_mib"] < full["total_gpu_mib"] and host["fits"]


def test_size_by_name_equals_size_by_config(files):
    by_name = _json("size", "--model", "Llama-3.1-8B", "--quant", "Q4_K_M")
    config = {**KNOWN_CONFIGS["Llama-3.1-8B"]}
    (files / "llama.json").write_text(json.dumps(config))
    assert by_name == _json("size", "--config", str(files / "llama.json"), "--quant", "Q4_K_M")
    assert by_name["parameters"] == known_shape("Llama-3.1-8B").parameter_count() == 8_030_261_312


def test_synthetic_name_is_the_synthetic_file(tmp_path):
    """--model synthetic uses the spec; a file written from that spec reads back to the same numbers."""
    path = write_synthetic_model(tmp_path / "tiny.gguf", TINY)
    args = ("--quant", "Q8_0", "--ctx", "2048", "--gpu", "T4", "--cpu", "none")
    by_name = _json("memory", "--model", "synthetic", *args)
    assert by_name == _json("memory", "--model", str(path), *args) == _json("memory", "--gguf", str(path), *args)
    assert by_name["n_ctx"] == 2048 and by_name["gpu"] == "T4" and by_name["gpu_model_mib"] > 0


def test_the_library_refuses_what_the_command_line_refuses():
    shape = known_shape("Qwen3-8B")
    for kw, message in (({"n_ctx": -1}, r"n_ctx \(--ctx\) is -1"), ({"n_ubatch": 0}, r"n_ubatch \(--ubatch\) is 0"),
                        ({"n_gpu_layers": -2}, r"n_gpu_layers \(--ngl\) is -2"),
                        ({"kv_type": "q4_0", "flash_attn": False}, "quantized V cache requires flash_attn"),
                        ({"gpu": "L5"}, "unknown GPU 'L5'")):
        with pytest.raises(ValueError, match=message):
            memory_breakdown(shape, "Q5_K_M", **{"n_ctx": 4096, **kw})
    assert memory_breakdown(shape, "Q5_K_M", 0, "L4").n_ctx == 40960
    assert memory_breakdown(shape, "Q5_K_M", 4096, "L4", kv_type="q8_0").fits
    with pytest.raises(ValueError, match="does not record"):
        memory_breakdown(shape.with_(n_ctx_train=0), "Q5_K_M", 0, "L4")
    assert resolve_shape("QWEN3-8b").shape == shape and resolve_shape("QWEN3-8b").header is None


@pytest.mark.llama
@pytest.mark.usefixtures("no_orphans")
def test_bench_against_a_real_server(tiny_model, tmp_path):
    """The valid side of bench's checks: a live server passes them, and the sweep's rows are written."""
    from helpers.runtime import LocalServer

    with LocalServer.for_model(tiny_model, parallel=2, ctx_per_slot=512) as server:
        out = _cli("bench", "--url", server.base_url, "--levels", "1, 2", "--tokens", "4", "--json",
                   "--out", str(tmp_path / "report.json"))
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report == json.loads((tmp_path / "report.json").read_text())
    levels = report["levels"]
    assert [r["concurrency"] for r in levels] == [1, 2] and all(r["all_full_length"] for r in levels)
