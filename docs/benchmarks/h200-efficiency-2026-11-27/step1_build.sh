#!/bin/bash
# Device call 1: unpack the pinned source, build the CUDA binaries (sm_90), write the synthetic Qwen3-8B.
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /root/src /root/m
tar xJf .device/llama-src-b64.tar.xz -C /root/src
SRC=/root/src/llama.cpp-0c1e57098bba-pb64d35ac
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nvcc --version | tail -2; cmake --version | head -1; gcc --version | head -1; nproc; } > $OUT/machine.txt 2>&1
python3 - > /tmp/cfg.sh <<PY
import shlex
from helpers import llamacpp
d = llamacpp.cmake_definitions(cuda=True, cuda_architectures="90")
print(shlex.join(llamacpp.configure_command("$SRC", "/root/build", d)))
PY
cat /tmp/cfg.sh > $OUT/build.log
bash /tmp/cfg.sh >> $OUT/build.log 2>&1 || { echo configure failed; tail -30 $OUT/build.log; exit 1; }
( s=$(date +%s); cmake --build /root/build --config Release -j 16 --target llama-server llama-batched-bench llama-bench llama-quantize llama-completion >> $OUT/build.log 2>&1; echo "build rc=$? in $(( $(date +%s) - s )) s" >> $OUT/build.log ) &
s=$(date +%s)
python3 -m helpers synth --shape 8b --out /root/m/qwen3-8b-F16.gguf > $OUT/synth.log 2>&1; echo "synth rc=$? in $(( $(date +%s) - s )) s" >> $OUT/synth.log
wait
tail -3 $OUT/build.log; cat $OUT/synth.log | tail -3; ls -la /root/build/bin/ /root/m/
