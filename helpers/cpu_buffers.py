"""Where llama.cpp's CPU backend keeps each weight: mapped from the file, or repacked for this CPU.

On the CPU, llama.cpp normally reads weights straight from the memory-mapped GGUF file (the
``CPU_Mapped`` buffer). But some CPUs have faster kernels for weights stored in another
layout, and llama.cpp copies ("repacks") the weights those kernels can use into an *extra
buffer* when it loads the model:

* ``AMX`` — Intel CPUs with Advanced Matrix Extensions (Xeon 4th generation and later)
  multiply whole tiles of int8 values. Weights of types Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K,
  IQ4_XS and F16 are laid out tile by tile (ggml-cpu/amx), with a few extra bytes per block
  for the quantized types;
* ``CPU_REPACK`` — x86 CPUs with AVX2 interleave the rows of Q4_0, Q4_K, IQ4_NL and MXFP4
  weights eight at a time (Q2_K needs AVX-512); same size, faster loads (ggml-cpu/repack).

Only matrices used in a matrix product qualify (not the embedding table, which is only ever
looked up by row), and only in shapes the kernels handle. The mapped buffer still spans the
file from its first to its last *non*-repacked weight, so on such CPUs llama.cpp's table shows
an extra row — and the two rows add up to more than the file. The rules below are those of the
course's pinned llama.cpp; ``tests/test_memory.py`` checks them against what it prints on the
machine that runs the tests, with and without AMX.

ARM CPUs repack other types (Q4_0, Q8_0, Q4_K…, with NEON dot-product or i8mm); those rules are
not modelled here: :meth:`CpuFeatures.detect` says so in the CPU's name and predicts no extra buffer.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path

from helpers.ggml_types import ggml_type

ALIGN = 32

#: ggml types the AMX kernels handle, and the multiple of it a row (K) must be.
AMX_ALIGNMENT = {"Q4_0": 32, "Q4_1": 32, "Q8_0": 32, "Q4_K": 256, "Q5_K": 256, "Q6_K": 256, "IQ4_XS": 256,
                 "F16": 16}
#: Extra bytes per block in the AMX layout: the int32 compensation of Q8_0's signed weights,
#: the unpacked scales of Q4_K/Q5_K, the scales of IQ4_XS (ggml-cpu/amx/mmq.cpp, get_row_size).
AMX_EXTRA_BYTES_PER_BLOCK = {"Q8_0": 4, "Q4_K": 4, "Q5_K": 4, "IQ4_XS": 2}
#: ggml types x86 repacks into CPU_REPACK, and the instruction set each needs.
X86_REPACK = {"Q4_0": "avx2", "Q4_K": "avx2", "IQ4_NL": "avx2", "MXFP4": "avx2", "Q2_K": "avx512"}


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU features that decide llama.cpp's extra buffers (for a build made on this CPU)."""

    name: str
    x86: bool = False
    avx2: bool = False
    avx512: bool = False
    amx: bool = False

    @classmethod
    def detect(cls, cpuinfo: str | None = None) -> CpuFeatures:
        """This machine's CPU, from ``/proc/cpuinfo`` (Linux) or the platform (elsewhere).

        The course builds llama.cpp for the CPU it runs on (``-march=native``), so the
        features the CPU reports are the features the build uses.
        """
        machine = platform.machine().lower()
        if cpuinfo is None:
            path = Path("/proc/cpuinfo")
            cpuinfo = path.read_text(errors="replace") if path.exists() else ""
        flags = set()
        for line in cpuinfo.splitlines():
            if re.match(r"flags\s*:", line):
                flags = set(line.split(":", 1)[1].split())
                break
        x86 = machine in ("x86_64", "amd64") or bool(flags & {"sse2", "avx"})
        if not x86:
            return cls(name=f"{machine or 'unknown'} (its repacked buffers are not modelled)")
        amx = {"amx_int8", "amx_tile", "avx512_vnni"} <= flags
        avx512 = "avx512f" in flags
        name = "x86-64 with AMX" if amx else "x86-64 with AVX-512" if avx512 else "x86-64"
        return cls(name=name, x86=True, avx2="avx2" in flags, avx512=avx512, amx=amx)


    @classmethod
    def named(cls, name: str) -> CpuFeatures:
        """``this`` (this machine), ``none`` (no extra buffers), or an x86 level: ``avx2``, ``avx512``, ``amx``."""
        levels = {"avx2": cls("x86-64 with AVX2", x86=True, avx2=True),
                  "avx512": cls("x86-64 with AVX-512", x86=True, avx2=True, avx512=True),
                  "amx": cls("x86-64 with AMX", x86=True, avx2=True, avx512=True, amx=True)}
        if name == "this":
            return cls.detect()
        if name == "none":
            return PLAIN_CPU
        if name not in levels:
            raise ValueError(f"unknown CPU {name!r}; choose this, none, avx2, avx512 or amx")
        return levels[name]


#: A CPU for which llama.cpp makes no extra buffer: every weight stays mapped from the file.
PLAIN_CPU = CpuFeatures(name="no extra buffers")


def _pad(n: int, align: int = ALIGN) -> int:
    return -(-n // align) * align


def is_matmul_weight(name: str, dims: tuple[int, ...]) -> bool:
    """A 2-D weight that llama.cpp multiplies with (the embedding table is only looked up)."""
    return len(dims) == 2 and name != "token_embd.weight"


def extra_buffer(name: str, dims: tuple[int, ...], type_name: str, cpu: CpuFeatures) -> str | None:
    """``"AMX"``, ``"CPU_REPACK"`` or None (stays in the mapped file) for one weight.

    ``dims`` is the numpy shape (rows N, columns K). llama.cpp tries AMX first, then
    CPU_REPACK — the order of its extra buffer types.
    """
    if not is_matmul_weight(name, dims):
        return None
    n, k = dims
    t = type_name.upper()
    if cpu.amx and t in AMX_ALIGNMENT and n % 32 == 0 and k % AMX_ALIGNMENT[t] == 0:
        return "AMX"
    needs = X86_REPACK.get(t)
    if cpu.x86 and needs and getattr(cpu, needs) and n % 8 == 0:
        return "CPU_REPACK"
    return None


def buffer_bytes(buffer: str | None, dims: tuple[int, ...], type_name: str) -> int:
    """Bytes one weight takes in ``buffer`` (None: in the file)."""
    t = ggml_type(type_name)
    plain = t.tensor_bytes(dims)
    if buffer != "AMX" or not t.is_quantized:
        return plain
    n, k = dims
    blocks = k // t.block_size
    return n * (blocks * t.type_size + blocks * AMX_EXTRA_BYTES_PER_BLOCK.get(t.name, 0))


def host_buffers(tensors: list[tuple[str, tuple[int, ...], str]], cpu: CpuFeatures,
                 duplicated: list[tuple[str, tuple[int, ...], str]] = ()) -> dict[str, int]:
    """Bytes of each CPU buffer llama.cpp allocates for ``tensors`` (name, numpy shape, type, in file order).

    ``CPU_Mapped`` is the span of the file from the first to the last weight that is not
    repacked; the extra buffers hold the repacked copies, each padded to 32 bytes.
    ``duplicated`` are tensors llama.cpp loads twice under another name (the output matrix of
    a model with tied embeddings is the embedding table again): they count only when repacked.
    """
    sizes: dict[str, int] = {}
    offset, first, end = 0, None, 0
    for name, dims, type_name in tensors:
        nbytes = ggml_type(type_name).tensor_bytes(dims)
        buffer = extra_buffer(name, dims, type_name, cpu)
        if buffer is None:
            first = offset if first is None else first
            end = offset + nbytes
        else:
            sizes[buffer] = sizes.get(buffer, 0) + _pad(buffer_bytes(buffer, dims, type_name))
        offset += _pad(nbytes)
    for name, dims, type_name in duplicated:
        buffer = extra_buffer(name, dims, type_name, cpu)
        if buffer is not None:
            sizes[buffer] = sizes.get(buffer, 0) + _pad(buffer_bytes(buffer, dims, type_name))
    return {"CPU_Mapped": end - (first or 0), **sizes}


def llama_quantize_order(names: list[str]) -> list[str]:
    """The order llama-quantize writes tensors in: unnumbered ones first, then by layer, then by name."""
    def key(name: str) -> tuple[int, str]:
        m = re.match(r"blk\.(\d+)\.", name)
        return (int(m.group(1)) if m else -1, name)

    return sorted(names, key=key)
