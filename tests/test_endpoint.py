"""backend.start() / Endpoint.stop(), the notebook-friendly way to keep a server across cells.

The local backend, for real: a llama-server on the synthetic model, stopped by ``stop()``,
by the end of a ``with backend.serve()`` block (also after an error), or when nothing refers
to its endpoint any more.
"""

from __future__ import annotations

import gc
import socket

import pytest

from helpers import backend
from helpers.client import http_get

pytestmark = [pytest.mark.llama, pytest.mark.usefixtures("no_orphans")]


@pytest.fixture
def local(monkeypatch):
    monkeypatch.setenv(backend.BACKEND_ENV, "local")


def _port(endpoint: backend.Endpoint) -> int:
    return int(endpoint.base_url.rsplit(":", 1)[1])


def _refuses(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.usefixtures("local")
def test_start_returns_a_ready_endpoint_and_stop_ends_it():
    endpoint = backend.start(model="synthetic", parallel=2, ctx_per_slot=1024, api_key="k")
    try:
        assert endpoint.backend == "local" and endpoint.model == "synthetic-qwen3" and endpoint.ready_s > 0
        assert http_get(endpoint.base_url + "/health")[0] == 200
        assert http_get(endpoint.base_url + "/v1/models")[0] == 401  # the key is enforced
        assert endpoint.client().models.list().data[0].id == "synthetic-qwen3"
    finally:
        endpoint.stop()
    assert _refuses(_port(endpoint))
    endpoint.stop()  # a second stop is harmless


@pytest.mark.usefixtures("local")
def test_serve_stops_after_the_block_even_after_an_error():
    with pytest.raises(RuntimeError, match="a cell failed"), backend.serve(model="synthetic", parallel=1) as endpoint:
        assert http_get(endpoint.base_url + "/health")[0] == 200
        raise RuntimeError("a cell failed")
    assert _refuses(_port(endpoint))


@pytest.mark.usefixtures("local")
def test_an_endpoint_nobody_holds_is_stopped():
    """A notebook cell run again rebinds its variable: the server it replaced must not linger."""
    endpoint = backend.start(model="synthetic", parallel=1)
    port = _port(endpoint)
    assert not _refuses(port)
    del endpoint
    gc.collect()
    assert _refuses(port)

