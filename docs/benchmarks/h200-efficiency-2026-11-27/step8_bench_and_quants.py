import os
from helpers import server_efficiency as se
from helpers.loadgen import benchmark
from helpers.runtime import LocalServer
from helpers.results import write_json
OUT = os.environ["OUT"]
course = {"flash_attn": "on", "extra_args": ("--backend-sampling", "--cache-ram", "0", "--metrics")}
# 1. the bench JSON against the course's server settings (np 32 so 32 streams have slots), Q5_K_M
with LocalServer.for_model("/root/m/qwen3-8b-Q5_K_M.gguf", parallel=32, ctx_per_slot=1024, **course) as s:
    rep = benchmark(s.base_url, levels=(1, 8, 32), max_tokens=128, requests=64, progress=False, crosstalk=8)
write_json(rep, OUT + "/bench_q5km.json")
for r in rep["levels"]:
    print("Q5_K_M", r["concurrency"], round(r["output_tokens_per_s"], 1), r["ttft_s"], r["itl_s"]["p50"], r["failed"],
          r.get("server_tokens_predicted"), r["tokens"], flush=True)
print("crosstalk", rep.get("crosstalk", {}).get("identical"), flush=True)
# 2. other quant types through the server
out = {}
for t in ("Q4_0", "Q8_0"):
    for n in (1, 8, 32):
        r = se.server_run(f"/root/m/qwen3-8b-{t}.gguf", n, course, prompt_words=24, repeats=2)
        out[f"{t}@{n}"] = r
        print(t, n, [round(w["decode_tokens_per_s"], 1) for w in r["waves"]], [round(w["ttft_max_s"], 3) for w in r["waves"]], flush=True)
write_json(out, OUT + "/quant_servers.json")
