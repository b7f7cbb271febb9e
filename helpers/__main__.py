"""Command line: ``python -m helpers <command>`` (also installed as ``llamacpp-course``).

build     build the pinned llama.cpp for this machine (cached)
synth     write a synthetic Qwen3 GGUF (tiny, or with Qwen3-8B's exact shapes)
complete  one non-interactive generation with llama-completion
demo      the whole local path, end to end (what `make demo` runs)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from helpers.errors import CourseError


def _build(args: argparse.Namespace) -> None:
    from helpers import llamacpp

    cuda = {"auto": None, "on": True, "off": False}[args.cuda]
    path = llamacpp.build(llamacpp.BuildSpec.local(cuda=cuda), jobs=args.jobs)
    print(path)


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
                            extra_args=args.extra or ())
    if args.json:
        print(json.dumps(result.to_record(), indent=2))


def _demo(args: argparse.Namespace) -> None:
    from helpers.demo import run_demo

    run_demo(repo=args.repo, quant=args.quant, n_predict=args.n_predict)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m helpers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build llama.cpp (cached by commit and flags)")
    b.add_argument("--cuda", choices=["auto", "on", "off"], default="auto")
    b.add_argument("--jobs", type=int, default=None)
    b.set_defaults(func=_build)

    s = sub.add_parser("synth", help="write a synthetic Qwen3 GGUF")
    s.add_argument("--shape", choices=["tiny", "8b"], default="tiny")
    s.add_argument("--dtype", choices=["F16", "F32", "f16", "f32"], default="F16")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None)
    s.set_defaults(func=_synth)

    c = sub.add_parser("complete", help="one generation with llama-completion")
    c.add_argument("--prompt", required=True)
    c.add_argument("--model", default=None, help="GGUF path (default: the synthetic model)")
    c.add_argument("-n", "--n-predict", type=int, default=64)
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--json", action="store_true", help="print the result record as JSON")
    c.add_argument("extra", nargs="*", help="extra llama.cpp arguments after --")
    c.set_defaults(func=_complete)

    d = sub.add_parser("demo", help="the end-to-end local demo")
    d.add_argument("--repo", default=None, help="Hub repo, e.g. Qwen/Qwen3-8B-GGUF (default: synthetic)")
    d.add_argument("--quant", default=None, help="e.g. Q5_K_M")
    d.add_argument("-n", "--n-predict", type=int, default=48)
    d.set_defaults(func=_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (CourseError, ValueError, ConnectionError, PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
