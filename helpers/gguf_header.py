"""Read a GGUF file's header — metadata and tensor list — locally or over HTTP ranges.

A GGUF file starts with everything a calculator needs: the key/value metadata (architecture,
shapes, tokenizer) and one record per tensor (name, shape, type, offset). The weights follow.
For a 6 GB file on the Hub the header is ~6 MB, so we fetch only that, with HTTP ``Range``
requests, and never download the weights. The same small parser reads local files, so both
paths are tested against each other and against ``gguf.GGUFReader``.
"""

from __future__ import annotations

import os
import struct
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.ggml_types import GgmlType, type_by_id

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGUF value types -> struct format (scalars); 8 = string, 9 = array
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order: (rows, ..., columns)
    type: GgmlType
    offset: int  # relative to the start of the data section

    @property
    def nbytes(self) -> int:
        return self.type.tensor_bytes(self.shape)


@dataclass
class GgufHeader:
    version: int
    kv: dict[str, Any]
    tensors: list[TensorInfo]
    data_offset: int  # bytes before the first tensor: header + metadata + tensor infos + padding
    header_end: int = 0  # the same, before the padding
    kv_bytes: dict[str, int] = field(default_factory=dict)  # bytes each key/value takes in the file
    alignment: int = DEFAULT_ALIGNMENT
    source: str = ""
    bytes_fetched: int = field(default=0)

    def tensor_names(self) -> list[str]:
        return [t.name for t in self.tensors]

    def file_size(self) -> int:
        """Size of the complete file: the data section ends after the last (padded) tensor."""
        if not self.tensors:
            return self.data_offset
        last = max(self.tensors, key=lambda t: t.offset)
        return self.data_offset + last.offset + last.nbytes

    def shape(self):  # noqa: ANN201 - avoids an import cycle in the annotation
        from helpers.model_shape import from_gguf_metadata

        return from_gguf_metadata(self.kv, self.tensor_names(), name=self.source)


class _Source:
    """Sequential reader over a byte source that is fetched lazily in growing chunks."""

    def __init__(self, fetch, first_chunk: int = 1 << 20) -> None:  # noqa: ANN001
        self._fetch = fetch
        self._buf = b""
        self._pos = 0
        self._chunk = first_chunk
        self.fetched = 0

    def read(self, n: int) -> bytes:
        while self._pos + n > len(self._buf):
            more = self._fetch(len(self._buf), max(self._chunk, self._pos + n - len(self._buf)))
            if not more:
                raise EOFError("the file ended inside its GGUF header (truncated or not a GGUF file)")
            self._buf += more
            self.fetched += len(more)
            self._chunk = min(self._chunk * 2, 64 << 20)
        out = self._buf[self._pos:self._pos + n]
        self._pos += n
        return out

    @property
    def pos(self) -> int:
        return self._pos

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.read(self.unpack("<Q")).decode("utf-8", errors="replace")


def _value(src: _Source, vtype: int) -> Any:
    if vtype in _SCALARS:
        return src.unpack(_SCALARS[vtype])
    if vtype == 8:
        return src.string()
    if vtype == 9:
        item_type, count = src.unpack("<I"), src.unpack("<Q")
        if item_type in _SCALARS:
            fmt = _SCALARS[item_type]
            size = struct.calcsize(fmt)
            raw = src.read(size * count)
            return list(struct.unpack("<" + fmt[1] * count, raw))
        return [_value(src, item_type) for _ in range(count)]
    raise ValueError(f"unknown GGUF value type {vtype}")


def _parse(src: _Source, name: str) -> GgufHeader:
    if src.read(4) != GGUF_MAGIC:
        raise ValueError(f"{name} is not a GGUF file (no 'GGUF' magic at the start)")
    version = src.unpack("<I")
    if version < 2:
        raise ValueError(f"{name}: GGUF version {version} is too old; reconvert the model")
    n_tensors, n_kv = src.unpack("<Q"), src.unpack("<Q")
    kv: dict[str, Any] = {}
    kv_bytes: dict[str, int] = {}
    for _ in range(n_kv):
        start = src.pos
        key = src.string()
        kv[key] = _value(src, src.unpack("<I"))
        kv_bytes[key] = src.pos - start
    infos = []
    for _ in range(n_tensors):
        tname = src.string()
        dims = [src.unpack("<Q") for _ in range(src.unpack("<I"))]
        ttype = type_by_id(src.unpack("<I"))
        offset = src.unpack("<Q")
        infos.append(TensorInfo(tname, tuple(reversed(dims)), ttype, offset))
    alignment = int(kv.get("general.alignment", DEFAULT_ALIGNMENT))
    data_offset = -(-src.pos // alignment) * alignment
    return GgufHeader(version, kv, infos, data_offset, src.pos, kv_bytes, alignment, name, src.fetched)


def read_local(path: str | os.PathLike[str]) -> GgufHeader:
    """Parse the header of a local GGUF file (only the header bytes are read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    with open(path, "rb") as fh:
        def fetch(offset: int, n: int) -> bytes:
            fh.seek(offset)
            return fh.read(n)

        return _parse(_Source(fetch), str(path))


def read_url(url: str, token: str | None = None, timeout_s: float = 30.0) -> GgufHeader:
    """Parse the header of a GGUF file on an HTTP server that honours ``Range`` (e.g. the Hub).

    Fails clearly if the server ignores ranges (it would otherwise send the whole file).
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def fetch(offset: int, n: int) -> bytes:
        req = urllib.request.Request(url, headers={**headers, "Range": f"bytes={offset}-{offset + n - 1}"})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            if resp.status != 206:
                raise ValueError(f"{url} ignored the Range request (HTTP {resp.status}); cannot read only the header")
            return resp.read()

    return _parse(_Source(fetch), url)


def hub_url(repo_id: str, filename: str, revision: str = "main") -> str:
    """The direct download address of a file in a Hub repo."""
    return f"https://huggingface.co/{repo_id}/resolve/{revision}/{filename}"
