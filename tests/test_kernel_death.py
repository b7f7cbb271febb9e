"""A notebook kernel killed mid-notebook takes its llama.cpp processes with it.

A real Jupyter kernel (the one the notebooks run in) starts a server the way notebook 05 does
(``backend.start``), a ``LocalServer`` and a long ``llama-completion`` run from a worker
thread; then the kernel is killed with SIGKILL — no ``finally``, no ``atexit``, as when a
kernel is killed or runs out of memory. Nothing of what it started may keep running, and the
servers' ports must refuse connections: the guardians of :mod:`helpers.process` end them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from helpers import process
from helpers.client import http_get

pytestmark = [pytest.mark.llama, pytest.mark.usefixtures("no_orphans")]

ROOT = Path(__file__).resolve().parents[1]

START = """
import json, os, threading, time
from helpers import backend, process
from helpers.runtime import LocalServer, run_completion
from helpers.synthetic import TINY, synthetic_model

tiny = synthetic_model(TINY)
endpoint = backend.start(backend="local", model="synthetic", parallel=1, ctx_per_slot=512)
server = LocalServer.for_model(tiny).start()
worker = threading.Thread(target=run_completion, args=("Go on",), daemon=True,
                          kwargs=dict(model=tiny, n_predict=-1, ctx_size=40960, stream=False, timeout_s=600))
worker.start()
print(json.dumps({"kernel": os.getpid(), "ports": [int(endpoint.base_url.rsplit(":", 1)[1]), server.settings.port],
                  "server": server.proc.pid, "guardian": server.proc.guardian.pid}))
"""


def _run(kc, code: str, timeout_s: float = 120) -> str:  # noqa: ANN001 - a BlockingKernelClient
    out: list[str] = []

    def hook(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))

    reply = kc.execute_interactive(code, timeout=timeout_s, output_hook=hook)
    assert reply["content"]["status"] == "ok", "".join(out)
    return "".join(out)


def _descendants(root: int) -> list[process.ProcessInfo]:
    table = process.live_processes()
    children: dict[int, list[process.ProcessInfo]] = {}
    for p in table:
        children.setdefault(p.ppid, []).append(p)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def _refuses(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        return False


def test_sigkill_of_the_kernel_ends_its_servers_and_runs(llama_bin):
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(ROOT))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        started = json.loads(_run(kc, START).strip().splitlines()[-1])
        kernel = started["kernel"]
        # What the kernel started, seen from outside: two servers, one completion, a guardian each.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ours = _descendants(kernel)
            names = [Path(p.command.split()[0]).name for p in ours if str(llama_bin) in p.command.split()[0]]
            if sorted(names) == ["llama-completion", "llama-server", "llama-server"]:
                break
            time.sleep(0.2)
        assert sorted(names) == ["llama-completion", "llama-server", "llama-server"], ours
        assert {started["server"], started["guardian"]} <= {p.pid for p in ours}, ours
        for port in started["ports"]:
            assert http_get(f"http://127.0.0.1:{port}/health")[0] == 200

        os.kill(kernel, signal.SIGKILL)

        pids = {p.pid for p in ours}
        deadline = time.monotonic() + 10
        while (alive := pids & {p.pid for p in process.live_processes()}) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive, [p.command[:120] for p in process.live_processes() if p.pid in alive]
        assert all(_refuses(port) for port in started["ports"])
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
