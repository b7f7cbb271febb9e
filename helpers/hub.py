"""Pick the GGUF file(s) for a quantization in a Hugging Face repo, and download them.

GGUF repos name their files by quantization (``Qwen3-8B-Q5_K_M.gguf``), sometimes in a
sub-folder per quant, and split big models into parts (``…-00001-of-00003.gguf``) that
llama.cpp loads from the first part. The selection is plain string logic, tested offline on
realistic file lists; only :func:`download_gguf` touches the network, and it is the function
the Modal download step calls too.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from helpers.config import models_dir
from helpers.errors import QuantNotFoundError

_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_QUANT_LABEL = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d+(?:_[A-Z0-9]+)*|TQ\d_\d|BF16|F16|F32|MXFP4(?:_MOE)?)(?![A-Za-z0-9])",
    re.IGNORECASE,
)


def parse_repo_id(repo_id: str) -> tuple[str, str]:
    """Split ``org/name``; anything else is a ValueError that shows the expected form."""
    parts = repo_id.strip().split("/") if isinstance(repo_id, str) else []
    if len(parts) != 2 or not all(parts):
        raise ValueError(
            f"{repo_id!r} is not a Hugging Face repo id; use the form 'org/name', "
            "e.g. 'Qwen/Qwen3-8B-GGUF'"
        )
    return parts[0], parts[1]


def _is_model_gguf(path: str) -> bool:
    name = path.rsplit("/", 1)[-1].lower()
    # Vision projectors ship beside the language model but are not a quant of it.
    return name.endswith(".gguf") and not name.startswith("mmproj")


def quant_label(path: str) -> str | None:
    """The quantization a GGUF path names (``Q5_K_M``, ``BF16``, …), upper-cased."""
    stem = _SPLIT.sub(".gguf", path)
    matches = _QUANT_LABEL.findall(stem)
    return matches[-1].upper() if matches else None


def available_quants(files: list[str]) -> list[str]:
    """Every quantization the file list offers, sorted."""
    return sorted({q for f in files if _is_model_gguf(f) and (q := quant_label(f))})


def select_gguf_files(files: list[str], quant: str) -> list[str]:
    """The file(s) that make up ``quant`` — one file, or all parts of a split, in order.

    Matching is case-insensitive and whole-word: ``Q4_K`` does not pick ``Q4_K_M``. Raises
    :class:`QuantNotFoundError` listing what exists when nothing matches, when two different
    models match, or when parts of a split are missing.
    """
    if not quant or not quant.strip():
        raise ValueError("quant is empty; pass e.g. 'Q5_K_M'")
    wanted = re.compile(rf"(?<![A-Za-z0-9]){re.escape(quant.strip())}(?![A-Za-z0-9_])", re.IGNORECASE)
    matches = [f for f in files if _is_model_gguf(f) and wanted.search(_SPLIT.sub(".gguf", f))]
    if not matches:
        have = available_quants(files)
        raise QuantNotFoundError(
            f"no GGUF file for quant {quant!r}. "
            + (f"Available: {', '.join(have)}." if have else "The repo has no GGUF files at all.")
        )
    groups: dict[str, list[str]] = defaultdict(list)
    for f in matches:
        groups[_SPLIT.sub("", f)].append(f)
    if len(groups) > 1:
        raise QuantNotFoundError(
            f"quant {quant!r} is ambiguous; it matches {len(groups)} models: "
            + ", ".join(sorted(g[0] for g in groups.values()))
            + ". Pass a more specific quant name."
        )
    (parts,) = groups.values()
    parts.sort()
    split = [_SPLIT.search(p) for p in parts]
    if any(split):
        if not all(split):
            raise QuantNotFoundError(f"quant {quant!r} mixes split and unsplit files: {parts}")
        total = int(split[0][2])
        present = {int(m[1]) for m in split if m}
        missing = sorted(set(range(1, total + 1)) - present)
        if missing:
            raise QuantNotFoundError(f"split model for {quant!r} is missing part(s) {missing} of {total}")
    return parts


def default_download_dir(repo_id: str) -> Path:
    org, name = parse_repo_id(repo_id)
    return models_dir() / f"{org}--{name}"


def download_gguf(
    repo_id: str,
    quant: str,
    dest: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    token: str | None = None,
) -> Path:
    """Download the GGUF file(s) for ``quant`` and return the path llama.cpp should load.

    Only the selected files are fetched (``allow_patterns``); huggingface_hub writes each
    file under a temporary name and renames it when complete, so an interrupted download is
    resumed, never mistaken for a finished one. Set ``HF_XET_HIGH_PERFORMANCE=1`` for
    faster transfers of multi-GB files on a good link.
    """
    parse_repo_id(repo_id)
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    target = Path(dest) if dest is not None else default_download_dir(repo_id)
    try:
        files = HfApi(token=token).list_repo_files(repo_id, revision=revision)
    except GatedRepoError as exc:
        raise PermissionError(f"{repo_id} is gated: accept its terms on huggingface.co and set HF_TOKEN") from exc
    except RepositoryNotFoundError as exc:
        raise ValueError(f"repo {repo_id!r} was not found on the Hub (or is private: set HF_TOKEN)") from exc
    except RevisionNotFoundError as exc:
        raise ValueError(f"revision {revision!r} does not exist in {repo_id}") from exc
    except Exception as exc:
        if not _is_network_error(exc):
            raise
        raise ConnectionError(
            f"could not reach the Hugging Face Hub to list {repo_id} ({exc.__class__.__name__}: {exc}). "
            "Offline? The course's local backend works without the Hub: use --model smollm2 or --model synthetic."
        ) from exc
    selected = select_gguf_files(files, quant)
    snapshot_download(repo_id, revision=revision, local_dir=target, allow_patterns=selected, token=token)
    return target / selected[0]


def _is_network_error(exc: BaseException) -> bool:
    """Connection failures, whichever HTTP library huggingface_hub uses underneath."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, OSError) or bool(names & {"TransportError", "ConnectionError", "NetworkError"})


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """True if huggingface.co answers (used to choose between real and synthetic models)."""
    from helpers.client import http_get

    status, _ = http_get("https://huggingface.co/api/models/Qwen/Qwen3-8B-GGUF", timeout_s=timeout_s)
    return status is not None and status < 500
