"""Backend choice, the backend-neutral functions (local path, for real), records and doctor."""

from __future__ import annotations

import json

import pytest

from helpers import backend, config
from helpers.client import http_get, stream_chat
from helpers.doctor import report, run_checks
from helpers.results import load_records, save_record


@pytest.fixture
def no_modal(monkeypatch, tmp_path):
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    monkeypatch.delenv(backend.BACKEND_ENV, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "modal.toml"))
    return tmp_path / "modal.toml"


def test_choice_follows_the_token(no_modal, monkeypatch):
    assert backend.choose_backend() == "local"
    no_modal.write_text('[default]\ntoken_id = "ak-1"\ntoken_secret = "as-2"\n')
    assert backend.modal_token_configured() and backend.choose_backend() == "modal"
    assert backend.choose_backend("local") == "local"
    monkeypatch.setenv(backend.BACKEND_ENV, "local")
    assert backend.choose_backend() == "local"


def test_bad_choices(no_modal):
    with pytest.raises(ValueError, match="backend must be one of"):
        backend.choose_backend("cloud")
    with pytest.raises(RuntimeError, match="no Modal token is configured: run `modal setup`"):
        backend.choose_backend("modal")
    no_modal.write_text("not toml [[[")
    assert not backend.modal_token_configured()


def test_local_inference_writes_a_record(no_modal, llama_bin):
    record = backend.run_inference("Records", n_predict=6, stream=False, local_model="synthetic")
    assert record["backend"] == "local" and record["perf"]["eval_tokens"] == 5 and record["prompt"] == "Records"
    assert record["quant"] == "F16" and record["model"].startswith("synthetic-qwen3-tiny-F16-")
    stored = json.loads((config.results_dir() / f"{record['id']}.json").read_text())
    assert stored == json.loads(json.dumps(record))  # what was returned is what was stored


def test_records_are_atomic_and_ordered(tmp_path):
    a = save_record({"id": "a", "created": "2026-01-01T00:00:00+00:00"}, tmp_path)
    save_record({"id": "b", "created": "2025-01-01T00:00:00+00:00"}, tmp_path)
    (tmp_path / ".record-partial.json").write_text("{")  # an interrupted write is ignored
    assert [r["id"] for r in load_records(tmp_path)] == ["b", "a"] and a.name == "a.json"


def test_modal_serve_needs_the_key_before_anything_else(no_modal, monkeypatch):
    """Without LLAMA_API_KEY every request would be refused (401) after a cold start: say so first."""
    no_modal.write_text('[default]\ntoken_id = "ak-1"\ntoken_secret = "as-2"\n')
    monkeypatch.delenv(config.API_KEY_ENV, raising=False)
    monkeypatch.setenv("MODAL_SERVER_URL", "http://127.0.0.1:9")  # were Modal contacted, this would fail otherwise
    with pytest.raises(RuntimeError, match=r"\$LLAMA_API_KEY is not set in this Python process"), \
            backend.serve(backend="modal"):
        pass


@pytest.mark.llama
@pytest.mark.usefixtures("no_orphans")
def test_local_serve_uses_the_course_server_settings(no_modal):
    with backend.serve(model="synthetic") as endpoint:
        assert endpoint.backend == "local" and endpoint.model == "synthetic-qwen3"
        reply = stream_chat(endpoint.client(), "Hello", max_tokens=8, thinking=False)
        assert reply.completion_tokens == 8 and reply.content
        props = json.loads(http_get(endpoint.base_url + "/props")[1])
        assert props["total_slots"] == 8 and props["default_generation_settings"]["n_ctx"] == 8192


def test_doctor_reports_what_to_fix(llama_bin):
    checks = {c.name: c for c in run_checks(network=False)}
    assert checks["llama.cpp build"].status == "ok" and checks["package modal"].status == "ok"
    smoke = checks["quantized generation"]
    assert smoke.status == "ok" and smoke.detail.startswith("Q4_K_M, 4 tokens at "), smoke.detail
    text = report(list(checks.values()))
    assert "all required checks passed" in text
