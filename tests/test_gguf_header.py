"""Reading GGUF headers locally and over HTTP ranges, checked against gguf.GGUFReader."""

from __future__ import annotations

import http.server
import os
import threading
from dataclasses import replace

import gguf
import pytest

from helpers.gguf_header import read_local, read_url
from helpers.model_shape import from_gguf_metadata, from_hf_config
from helpers.synthetic import TINY, model_shape, write_synthetic_model


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (what the Hub's CDN does), counting bytes sent."""

    sent = 0

    def do_GET(self):  # noqa: N802
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        rng = self.headers.get("Range")
        if not rng:
            self.send_error(400, "this test server only answers Range requests")
            return
        start, end = (int(x) if x else None for x in rng.removeprefix("bytes=").split("-"))
        end = min(end if end is not None else size - 1, size - 1)
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        RangeHandler.sent += len(data)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    spec = replace(TINY, name="served", n_vocab=32000)  # a bigger header, a few hundred KB
    write_synthetic_model(root / "model-F16.gguf", spec)
    handler = lambda *a, **k: RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, spec, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_local_header_matches_gguf_reader(tiny_model):
    ours = read_local(tiny_model)
    theirs = gguf.GGUFReader(tiny_model)
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for a, b in zip(ours.tensors, theirs.tensors, strict=True):
        assert a.type.name == gguf.GGMLQuantizationType(b.tensor_type).name
        assert ours.data_offset + a.offset == b.data_offset
        assert a.nbytes == b.n_bytes
    assert ours.kv["qwen3.block_count"] == TINY.n_layer
    assert ours.kv["tokenizer.ggml.tokens"] == list(theirs.get_field("tokenizer.ggml.tokens").contents())
    assert ours.file_size() == tiny_model.stat().st_size
    assert sum(ours.kv_bytes.values()) + 24 < ours.data_offset


def test_shape_from_the_header_is_the_spec(tiny_model):
    assert read_local(tiny_model).shape().with_(name="") == model_shape(TINY).with_(name="")


def test_remote_header_reads_only_the_header(served):
    root, spec, base = served
    RangeHandler.sent = 0
    remote = read_url(f"{base}/model-F16.gguf")
    local = read_local(root / "model-F16.gguf")
    assert remote.kv == local.kv and remote.tensors == local.tensors and remote.data_offset == local.data_offset
    assert remote.shape().n_vocab == 32000
    size = (root / "model-F16.gguf").stat().st_size
    assert RangeHandler.sent == remote.bytes_fetched < size / 4  # the weights were never downloaded


def test_remote_errors(served):
    _, _, base = served
    with pytest.raises(Exception, match="404|Not Found"):
        read_url(f"{base}/missing.gguf")


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ValueError, match="not a GGUF file"):
        read_local(bad)
    short = tmp_path / "short.gguf"
    short.write_bytes(b"GGUF\x03\x00\x00\x00\x01")
    with pytest.raises(EOFError, match="truncated"):
        read_local(short)


QWEN3_8B_CONFIG = {  # Qwen/Qwen3-8B config.json, the fields that matter
    "model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
    "tie_word_embeddings": False, "max_position_embeddings": 40960, "rope_scaling": None,
}


def test_hf_config_sources(tmp_path):
    import json

    shape = from_hf_config(QWEN3_8B_CONFIG)
    assert (shape.arch, shape.n_embd_kv, shape.n_gqa, shape.tied) == ("qwen3", 1024, 4, False)
    assert shape.parameter_count() == 8_190_735_360
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_8B_CONFIG))
    assert from_hf_config(tmp_path / "config.json").with_(name="") == shape
    assert from_hf_config(tmp_path).with_(name="") == shape
    llama = from_hf_config({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
                            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                            "vocab_size": 128256, "rope_scaling": {"rope_type": "llama3"}})
    assert llama.head_dim == 128 and llama.rope_freqs and llama.parameter_count() == 8_030_261_312
    with pytest.raises(ValueError, match="not supported"):
        from_hf_config({**QWEN3_8B_CONFIG, "model_type": "gemma3"})


def test_tensor_names_are_ggufs_own():
    """ModelShape spells tensor names itself; they must be the ones gguf defines for the arch."""
    for arch, shape in (("qwen3", model_shape(TINY)), ("qwen2", model_shape(TINY).with_(arch="qwen2")),
                        ("llama", model_shape(TINY).with_(arch="llama", rope_freqs=True))):
        arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
        allowed = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[arch_enum]}
        for name, _ in shape.tensors():
            base = name.rsplit(".", 1)[0]
            generic = base.replace(base.split(".")[1], "{bid}", 1) if base.startswith("blk.") else base
            assert generic in allowed, (arch, name)


def test_gguf_metadata_rejects_other_archs():
    with pytest.raises(ValueError, match="not supported"):
        from_gguf_metadata({"general.architecture": "gemma3"}, [])
