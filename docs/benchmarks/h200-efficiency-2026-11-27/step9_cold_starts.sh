#!/bin/bash
# Cold starts on the GPU machine: the pinned CUDA build, a 7.4 GB synthetic model, mmap vs --load-mode none,
# page cache cold vs warm (helpers.coldstart.measure_ready: llama-server's own log timestamps).
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD LLAMACPP_COURSE_BIN=/root/build/bin
mkdir -p /root/src /root/m && tar xJf .device/llama-src-b64.tar.xz -C /root/src
SRC=/root/src/llama.cpp-0c1e57098bba-pb64d35ac
python3 -c "
import shlex
from helpers import llamacpp
print(shlex.join(llamacpp.configure_command('$SRC', '/root/build', llamacpp.cmake_definitions(cuda=True, cuda_architectures='90'))))" > /tmp/cfg.sh
bash /tmp/cfg.sh > /tmp/build.log 2>&1 || { tail -20 /tmp/build.log; exit 1; }
( s=$(date +%s); cmake --build /root/build --config Release -j 16 --target llama-server >> /tmp/build.log 2>&1; echo "build rc=$? $(( $(date +%s)-s )) s" ) &
python3 - <<'PY'
import time
from dataclasses import replace
from helpers.synthetic import QWEN3_8B, write_synthetic_model
t = time.time()
write_synthetic_model("/root/m/qwen3-12layers-F16.gguf", replace(QWEN3_8B, name="qwen3-12-layers", n_layer=12))
print(f"model written in {time.time() - t:.0f} s", flush=True)
PY
wait
python3 - <<'PY'
import os
from helpers import coldstart
from helpers.results import write_json
m = "/root/m/qwen3-12layers-F16.gguf"
rows = [coldstart.measure_ready(m, load_mode=mode, cache=cache, threads=None) for _ in range(2)
        for mode in ("mmap", "none") for cache in ("cold", "warm")]
print(coldstart.summarize_table(rows))
write_json({"gpu": os.popen("nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader").read().strip(),
            "model": m, "model_bytes": os.path.getsize(m), "runs": rows}, os.environ["OUT"] + "/gpu_cold_starts.json")
PY
df -h /root | tail -1; findmnt -no FSTYPE -T /root
