"""Read a GGUF file's header — metadata and tensor list — locally or over HTTP ranges.

A GGUF file starts with everything a calculator needs: the key/value metadata (architecture,
shapes, tokenizer) and one record per tensor (name, shape, type, offset). The weights follow.
For a 6 GB file on the Hub the header is ~6 MB, so we fetch only that, with HTTP ``Range``
requests, and never download the weights. The same small parser reads local files, so both
paths are tested against each other and against ``gguf.GGUFReader``.

Whatever is not a GGUF file (a ``config.json``, an HTML error page, a truncated download)
raises :class:`GgufHeaderError`, a ``ValueError`` whose one-line message names the file and
what to pass instead, never a ``struct.error`` from deep inside the parser.
"""

from __future__ import annotations

import os
import struct
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.errors import CourseError, ModelFileNotFoundError
from helpers.ggml_types import GgmlType, type_by_id

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
#: No single field of a real header comes near this (a 256k-token vocabulary is read one
#: string at a time); a bigger length means the bytes are not a GGUF header, and reading on
#: would pull a whole multi-GB file over HTTP.
_MAX_READ = 256 << 20
_FIX = "pass a .gguf model file (a path or an http(s) URL)"


class GgufHeaderError(CourseError, ValueError):
    """The bytes are not a GGUF header we can read (another kind of file, or a damaged one)."""


class TruncatedGgufError(GgufHeaderError, EOFError):
    """The file ends before its header does: an interrupted download, or not a GGUF file."""

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
        if n > _MAX_READ:
            raise GgufHeaderError(f"a header field claims {n:,} bytes")
        while self._pos + n > len(self._buf):
            more = self._fetch(len(self._buf), max(self._chunk, self._pos + n - len(self._buf)))
            if not more:
                raise TruncatedGgufError("the file ended inside its GGUF header (truncated or not a GGUF file)")
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
    """The header, or a one-line :class:`GgufHeaderError` naming ``name`` for anything unreadable."""
    try:
        return _parse_fields(src, name)
    except TruncatedGgufError as exc:
        raise TruncatedGgufError(f"{name}: {exc}; {_FIX}") from None
    except GgufHeaderError as exc:
        if str(exc).startswith(name):
            raise
        raise GgufHeaderError(f"{name} is not a readable GGUF file ({exc}); {_FIX}") from None
    except (struct.error, OverflowError, MemoryError, ValueError) as exc:  # a damaged header's field values
        raise GgufHeaderError(f"{name} is not a readable GGUF file ({exc}); {_FIX}") from None


def _parse_fields(src: _Source, name: str) -> GgufHeader:
    if src.read(4) != GGUF_MAGIC:
        raise GgufHeaderError(f"{name} is not a GGUF file (no 'GGUF' magic at the start); {_FIX}")
    version = src.unpack("<I")
    if version < 2:
        raise GgufHeaderError(f"{name}: GGUF version {version} is too old; reconvert the model with a recent "
                              "llama.cpp (convert_hf_to_gguf.py)")
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
    if alignment < 1:
        raise GgufHeaderError(f"general.alignment is {alignment}")
    data_offset = -(-src.pos // alignment) * alignment
    return GgufHeader(version, kv, infos, data_offset, src.pos, kv_bytes, alignment, name, src.fetched)


def read_local(path: str | os.PathLike[str]) -> GgufHeader:
    """Parse the header of a local GGUF file (only the header bytes are read)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ModelFileNotFoundError(f"{path} is a folder, not a GGUF file; {_FIX}")
    if not path.is_file():
        raise ModelFileNotFoundError(f"no GGUF file at {path}; check the path, or {_FIX}")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        def fetch(offset: int, n: int) -> bytes:
            fh.seek(offset)
            return fh.read(max(0, min(n, size - offset)))  # never ask for more than the file holds

        return _parse(_Source(fetch), str(path))


class _KeepTokenOnHost(urllib.request.HTTPRedirectHandler):
    """Follow redirects (the Hub sends file reads to its CDN) without carrying the token to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).hostname != urllib.parse.urlsplit(req.full_url).hostname:
            new.remove_header("Authorization")
        return new


def read_url(url: str, token: str | None = None, timeout_s: float = 30.0) -> GgufHeader:
    """Parse the header of a GGUF file on an HTTP server that honours ``Range`` (e.g. the Hub).

    Fails clearly if the server ignores ranges (it would otherwise send the whole file).
    On huggingface.co, ``token`` defaults to ``$HF_TOKEN`` (gated repositories); it is never
    sent to another host, not even along a redirect.
    """
    host = urllib.parse.urlsplit(url).hostname or ""
    if token is None and (host == "huggingface.co" or host.endswith(".huggingface.co")):
        token = os.environ.get("HF_TOKEN") or None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    opener = urllib.request.build_opener(_KeepTokenOnHost)

    def fetch(offset: int, n: int) -> bytes:
        req = urllib.request.Request(url, headers={**headers, "Range": f"bytes={offset}-{offset + n - 1}"})
        try:
            with opener.open(req, timeout=timeout_s) as resp:
                if resp.status != 206:
                    raise GgufHeaderError(f"{url} ignored the Range request (HTTP {resp.status}), so only the "
                                          "whole file could be read; download it and pass the local path")
                return resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # asked beyond the end: the file is shorter than its header claims
                return b""
            reason = f"HTTP {exc.code} {exc.reason}"
            if exc.code in (401, 403):
                raise PermissionError(f"{url} answered {reason}; for a gated Hub repository accept its terms "
                                      "on huggingface.co and set HF_TOKEN") from None
            if exc.code == 404:
                raise ModelFileNotFoundError(f"{url} answered {reason}; check the address (on the Hub: "
                                             "https://huggingface.co/ORG/NAME/resolve/main/FILE.gguf)") from None
            raise ConnectionError(f"{url} answered {reason}; try again later or check the address") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConnectionError(f"cannot reach {url} ({reason}); check the address and your network, "
                                  "or pass a local .gguf file") from None

    return _parse(_Source(fetch), url)


def read_header(source: str | os.PathLike[str]) -> GgufHeader:
    """The header of a GGUF file given as a local path or an http(s) URL."""
    text = str(source)
    return read_url(text) if text.startswith(("http://", "https://")) else read_local(text)


def hub_url(repo_id: str, filename: str, revision: str = "main") -> str:
    """The direct download address of a file in a Hub repo."""
    return f"https://huggingface.co/{repo_id}/resolve/{revision}/{filename}"
