"""The cold-start budget, the page-cache tools, and the llama-server stopwatch, run for real."""

from __future__ import annotations

import os
import shutil

import pytest

from helpers.coldstart import (
    CONTAINER_START_S,
    PCIE4_X16_EFFECTIVE_GB_S,
    PCIE4_X16_GB_S,
    VOLUME_READ_GB_S_RANGE,
    cold_start_budget,
    evict,
    filesystem_type,
    logged_load_mode,
    main,
    measure_ready,
    model_cold_start_budget,
    parse_log_times,
    prewarm,
    resident_fraction,
    snapshot_gpu_bytes,
    summarize_table,
)
from helpers.model_shape import known_shape
from helpers.sizes import file_size

pytestmark = pytest.mark.usefixtures("no_orphans")


def test_the_course_model_budget_adds_up_its_phases():
    b = model_cold_start_budget("Qwen3-8B", "Q5_K_M", "L4")
    assert b.model_bytes == file_size(known_shape("Qwen3-8B"), "Q5_K_M")
    assert round(b.model_bytes / 1e9, 2) == 5.85
    assert b.total_s == pytest.approx(sum(b.phases().values()))
    assert b.container_start_s == CONTAINER_START_S
    # reading 5.85 GB from the Volume dominates: more than copying it over PCIe and warming up together
    assert b.volume_read_s > b.host_to_device_s + b.warmup_s
    # overlapping the read and the copy can only help, and at most by the shorter of the two
    assert b.total_s - b.overlapped_s == pytest.approx(min(b.volume_read_s, b.host_to_device_s))
    # Modal's "one to two GB/s" brackets the read between 2.9 and 5.9 seconds
    slow, fast = (cold_start_budget(b.model_bytes, volume_gb_s=v) for v in VOLUME_READ_GB_S_RANGE)
    assert fast.volume_read_s < b.volume_read_s < slow.volume_read_s
    assert slow.volume_read_s == pytest.approx(2 * fast.volume_read_s)


def test_the_pcie_assumption_is_80_percent_of_the_datasheet():
    """PCIe 4.0 x16: 16 GT/s x 16 lanes, 128b/130b, is 31.5 GB/s; the budget assumes 25 GB/s of it."""
    assert round(PCIE4_X16_GB_S, 1) == 31.5 and PCIE4_X16_EFFECTIVE_GB_S == 25.0
    assert cold_start_budget(25_000_000_000).host_to_device_s == pytest.approx(1.0)


def test_a_faster_link_shortens_only_its_own_phase():
    base = cold_start_budget(6_000_000_000)
    faster = cold_start_budget(6_000_000_000, host_to_device_gb_s=50)
    assert faster.host_to_device_s == pytest.approx(base.host_to_device_s / 2)
    assert (faster.container_start_s, faster.volume_read_s, faster.warmup_s) == \
        (base.container_start_s, base.volume_read_s, base.warmup_s)


def test_a_gpu_snapshot_restores_more_than_the_weights():
    """The KV cache the course reserves (65,536 tokens) is GPU memory too: the snapshot holds it."""
    assert snapshot_gpu_bytes() > 2 * file_size(known_shape("Qwen3-8B"), "Q5_K_M")
    assert snapshot_gpu_bytes(n_ctx=4096) < snapshot_gpu_bytes(n_ctx=65536)


@pytest.mark.parametrize("kwargs, problem", [
    ({"model_bytes": 0}, "model_bytes"),
    ({"model_bytes": 10, "volume_gb_s": 0}, "volume_gb_s"),
    ({"model_bytes": 10, "host_to_device_gb_s": -1}, "host_to_device_gb_s"),
    ({"model_bytes": 10, "warmup_s": -1}, "warmup_s"),
])
def test_bad_budget_inputs_name_the_problem(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        cold_start_budget(**kwargs)


def test_the_command_prints_the_budget_and_refuses_bad_input(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "5.85 GB" in out and "read GGUF from the Volume" in out
    assert main(["--model", "no-such-model"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown model")


def test_eviction_really_empties_the_page_cache(tmp_path):
    if filesystem_type(tmp_path) == "tmpfs":
        pytest.skip("on tmpfs the page cache is the file's only copy: there is nothing to evict")
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(32 << 20))
    prewarm(path)
    assert resident_fraction(path) == pytest.approx(1.0, abs=0.01)
    evict(path)
    assert resident_fraction(path) < 0.05
    prewarm(path)
    assert resident_fraction(path) > 0.95


def test_log_timestamps_are_read_as_seconds_since_start():
    log = ("0.00.007.514 I srv    load_model: loading model '/m.gguf'\n"
           "0.00.175.235 I load_tensors: loading model tensors, this can take a while... (load_mode = none)\n"
           "1.02.003.004 I srv  llama_server: model loaded\n")
    times = parse_log_times(log)
    assert times == {"start": pytest.approx(0.007514), "tensors": pytest.approx(0.175235),
                     "ready": pytest.approx(62.003004)}
    assert logged_load_mode(log) == "none"


@pytest.mark.llama
def test_cold_starts_of_a_real_llama_server(tiny_model, tmp_path):
    model = shutil.copyfile(tiny_model, tmp_path / tiny_model.name)  # no other process maps this copy
    rows = [measure_ready(model, load_mode=mode, cache="cold") for mode in ("mmap", "none")]
    rows.append(measure_ready(model, load_mode="mmap", cache="warm"))
    for r in rows:
        # the flag reached llama.cpp: its loader says which way it read the file
        assert r.logged_mode == r.load_mode
        phases = (r.metadata_s, r.tensors_s, r.context_s, r.warmup_s)
        assert r.log_ready_s > 0 and r.poll_ready_s > 0 and all(p > 0 for p in phases)
        # the phases happen one after the other, inside the time to ready
        assert sum(phases) < r.log_ready_s
        # either way of loading reads the whole file through the page cache
        assert r.resident_after > 0.95
    cold_mmap, cold_none, warm = rows
    # "cold" means cold: none of the file was cached when llama-server started
    assert cold_mmap.resident_before < 0.05 and cold_none.resident_before < 0.05
    assert warm.resident_before > 0.95
    table = summarize_table(rows)
    assert table.count("\n") == 2 + 3 - 1 and "| none | cold |" in table
