"""Inference result records: one JSON file per run, written atomically.

The Modal PoC writes them to the ``llamacpp-results`` volume; the local backend writes the
same records to ``~/.cache/llamacpp-course/results``. A record holds everything needed to
understand a run later: what was asked, of which model, with which arguments, what came
back, and llama.cpp's own speed and memory figures.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from helpers.config import LLAMA_CPP_COMMIT


def make_record(result: Any, *, backend: str, gpu: str | None, model: str, repo: str | None = None,
                quant: str | None = None) -> dict[str, Any]:
    """A JSON-ready record of one :class:`helpers.runtime.CompletionResult`."""
    return {
        "id": uuid.uuid4().hex,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "backend": backend,
        "gpu": gpu,
        "llama_cpp": LLAMA_CPP_COMMIT[:7],
        "model": model,
        "repo": repo,
        "quant": quant,
        "prompt": result.settings.prompt,
        **result.to_record(),
    }


def write_json(data: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as JSON to ``path``, all or nothing: temp file beside it, fsync, rename.

    A reader (or a run cut short, or a Modal volume commit) sees the old file or the new one,
    never half of one. Dataclasses are written as their fields.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, default=_jsonable)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(o: Any) -> Any:
    return asdict(o) if is_dataclass(o) and not isinstance(o, type) else str(o)


def save_record(record: dict[str, Any], directory: str | os.PathLike[str]) -> Path:
    """Write ``record`` as ``<id>.json`` in ``directory`` (atomically, :func:`write_json`)."""
    return write_json(record, Path(directory) / f"{record['id']}.json")


def load_records(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records in ``directory``, oldest first (temporary files are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    records = [json.loads(p.read_text()) for p in directory.glob("*.json") if not p.name.startswith(".")]
    return sorted(records, key=lambda r: r["created"])
