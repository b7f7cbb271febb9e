import os, time
from concurrent.futures import ThreadPoolExecutor
from helpers import server_efficiency as se
from helpers.loadgen import measure_request
from helpers.runtime import LocalServer
from helpers.results import write_json
m = "/root/m/qwen3-8b-Q5_K_M.gguf"
def cpu_times(pid):
    d = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            st = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
            d[tid] = (open(f"/proc/{pid}/task/{tid}/comm").read().strip(), int(st[11]) + int(st[12]))
        except OSError:
            pass
    return d
def wave(s, n, temperature, tokens=128):
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda i: measure_request(s.base_url, se.prompt_of(i, 24), tokens, temperature=temperature), range(n)))
out = {}
B = ("--cache-ram", "0")
for label, extra, temp in (("bs default-chain", ("--backend-sampling",) + B, None),
                           ("bs temp0", ("--backend-sampling",) + B, 0.0),
                           ("bs short-chain", ("--backend-sampling", "--samplers", "top_k;top_p;min_p;temperature") + B, None),
                           ("cpu temp0", B, 0.0),
                           ("cpu default-chain", B, None)):
    with LocalServer.for_model(m, parallel=32, ctx_per_slot=1024, flash_attn="on", extra_args=extra) as s:
        wave(s, 32, temp, 16)
        rows = []
        for n in (32, 8, 1):
            c0 = cpu_times(s.proc.pid); t0 = time.time()
            res = wave(s, n, temp)
            dt = time.time() - t0; c1 = cpu_times(s.proc.pid)
            busy = sorted(((c1[k][1] - c0.get(k, (None, 0))[1]) / 100 / dt, c1[k][0]) for k in c1)[-3:]
            w = se.decode_window(res)
            rows.append({"n": n, "decode_tokens_per_s": w["tokens_per_s"], "busiest_threads_cpu": busy,
                         "failed": sum(1 for r in res if r.error), "ttft_max_s": max(r.ttft_s or 0 for r in res)})
        out[label] = {"extra_args": extra, "temperature": temp, "rows": rows}
        print(label, [(r["n"], round(r["decode_tokens_per_s"], 1), [(round(b, 2), nm) for b, nm in r["busiest_threads_cpu"]]) for r in rows], flush=True)
write_json(out, os.environ["OUT"] + "/sampling.json")
