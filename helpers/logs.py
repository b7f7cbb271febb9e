"""Read llama.cpp's output: generated text, speed lines and the memory breakdown.

llama.cpp prints its measurements as human-readable log lines. We read them in two forms:

* ``--log-jsonl`` output (what our command lines ask for): every log line is a JSON object
  on stdout; generated text arrives as records of level ``none``, the memory breakdown as a
  ``fit_memory_breakdown`` record. This is sturdy — no column alignment to guess.
* The plain-text table (``llama_memory_breakdown_print`` / ``common_memory_breakdown_print``),
  as printed with ``-v`` or pasted from somebody's terminal, e.g. the article's L4 run.

Both feed the same result objects, so the Modal function and the local runtime report
exactly the same fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: The closing lines of the article's L4 run (Qwen3-8B Q5_K_M, n_ctx 4096, all layers on the
#: GPU): its speed lines and memory breakdown, kept verbatim as program output to check against.
ARTICLE_LOG = Path(__file__).parent / "data" / "article_l4_run.log"


@dataclass
class PerfMetrics:
    """The ``common_perf_print`` block: where the time went, in ms and tokens/s."""

    load_ms: float | None = None
    prompt_ms: float | None = None
    prompt_tokens: int | None = None
    prompt_tokens_per_s: float | None = None
    eval_ms: float | None = None
    eval_tokens: int | None = None
    eval_tokens_per_s: float | None = None
    total_ms: float | None = None
    total_tokens: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MemoryRow:
    """One line of llama.cpp's memory breakdown, in MiB (llama.cpp rounds down).

    ``kind`` is ``device`` (a GPU, with total/free/unaccounted), ``host`` (system RAM used
    for the model/context/compute), or ``buffer_type`` (other buffers, e.g. CPU_REPACK).
    """

    kind: str
    name: str
    self_mib: int
    model_mib: int
    context_mib: int
    compute_mib: int
    description: str | None = None
    total_mib: int | None = None
    free_mib: int | None = None
    unaccounted_mib: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MemoryBreakdown:
    rows: list[MemoryRow] = field(default_factory=list)

    def row(self, name: str) -> MemoryRow:
        """The row whose name (``CUDA0``, ``Host``, …) or description (``L4``) matches."""
        for r in self.rows:
            if r.name == name or r.description == name:
                return r
        raise KeyError(f"no memory-breakdown row {name!r}; rows: {[r.name for r in self.rows]}")

    @property
    def host(self) -> MemoryRow | None:
        return next((r for r in self.rows if r.kind == "host"), None)

    def to_dict(self) -> list[dict]:
        return [r.to_dict() for r in self.rows]

    def __bool__(self) -> bool:
        return bool(self.rows)


# --- speed lines ----------------------------------------------------------------------
_NUM = r"([0-9]+(?:\.[0-9]+)?)"
_LOAD = re.compile(rf"load time\s*=\s*{_NUM} ms")
_PROMPT = re.compile(rf"prompt eval time\s*=\s*{_NUM} ms\s*/\s*(\d+) tokens.*?{_NUM} tokens per second")
_EVAL = re.compile(rf"(?<!prompt )eval time\s*=\s*{_NUM} ms\s*/\s*(\d+) runs.*?{_NUM} tokens per second")
_TOTAL = re.compile(rf"total time\s*=\s*{_NUM} ms\s*/\s*(\d+) tokens")


def parse_perf(text: str) -> PerfMetrics | None:
    """Parse the ``common_perf_print`` (or older ``llama_perf_context_print``) lines.

    Returns None when the text has no such lines (e.g. a run that crashed early).
    """
    perf = PerfMetrics()
    found = False
    for line in text.splitlines():
        if "perf" not in line or "print" not in line:
            continue
        if m := _PROMPT.search(line):
            perf.prompt_ms, perf.prompt_tokens, perf.prompt_tokens_per_s = float(m[1]), int(m[2]), float(m[3])
        elif m := _EVAL.search(line):
            perf.eval_ms, perf.eval_tokens, perf.eval_tokens_per_s = float(m[1]), int(m[2]), float(m[3])
        elif m := _LOAD.search(line):
            perf.load_ms = float(m[1])
        elif m := _TOTAL.search(line):
            perf.total_ms, perf.total_tokens = float(m[1]), int(m[2])
        else:
            continue
        found = True
    return perf if found else None


# --- memory breakdown -----------------------------------------------------------------
_DEVICE_ROW = re.compile(
    r"\|\s*-\s*(?P<name>[^|(]+?)\s*(?:\((?P<desc>[^)]*)\))?\s*\|\s*(?P<total>\d+)\s*=\s*(?P<free>\d+)\s*\+\s*"
    r"\(\s*(?P<self>\d+)\s*=\s*(?P<model>\d+)\s*\+\s*(?P<context>\d+)\s*\+\s*(?P<compute>\d+)\s*\)\s*\+\s*"
    r"(?P<unacc>-?\d+)\s*\|"
)
_OTHER_ROW = re.compile(
    r"\|\s*-\s*(?P<name>[^|]+?)\s*\|\s*(?P<self>\d+)\s*=\s*(?P<model>\d+)\s*\+\s*(?P<context>\d+)\s*\+\s*"
    r"(?P<compute>\d+)\s*\|"
)


def parse_memory_table(text: str) -> MemoryBreakdown:
    """Parse the plain-text ``memory breakdown [MiB]`` table.

    If the table was printed more than once (llama.cpp prints a projection before loading
    and the real figures at exit), the last complete table wins.
    """
    tables: list[list[MemoryRow]] = []
    for line in text.splitlines():
        if "memory breakdown [MiB]" in line:
            tables.append([])
            continue
        if not tables or "memory_breakdown_print" not in line:
            continue
        if m := _DEVICE_ROW.search(line):
            tables[-1].append(MemoryRow(
                kind="device", name=m["name"].strip(), description=(m["desc"] or None),
                total_mib=int(m["total"]), free_mib=int(m["free"]), self_mib=int(m["self"]),
                model_mib=int(m["model"]), context_mib=int(m["context"]), compute_mib=int(m["compute"]),
                unaccounted_mib=int(m["unacc"]),
            ))
        elif m := _OTHER_ROW.search(line):
            name = m["name"].strip()
            tables[-1].append(MemoryRow(
                kind="host" if name == "Host" else "buffer_type", name=name, self_mib=int(m["self"]),
                model_mib=int(m["model"]), context_mib=int(m["context"]), compute_mib=int(m["compute"]),
            ))
    complete = [t for t in tables if t]
    return MemoryBreakdown(complete[-1] if complete else [])


def memory_from_json(data: dict) -> MemoryBreakdown:
    """Build a breakdown from a ``fit_memory_breakdown`` record's ``data``."""
    if data.get("unit", "MiB") != "MiB":
        raise ValueError(f"unexpected memory unit {data.get('unit')!r}")
    rows = []
    for r in data.get("rows", []):
        rows.append(MemoryRow(
            kind=r.get("kind", "buffer_type"), name=r["name"], description=r.get("description"),
            total_mib=r.get("total"), free_mib=r.get("free"), self_mib=r["self"], model_mib=r["model"],
            context_mib=r["context"], compute_mib=r["compute"], unaccounted_mib=r.get("unaccounted"),
        ))
    return MemoryBreakdown(rows)


# --- JSONL stream ---------------------------------------------------------------------
_END_OF_TEXT = " [end of text]\n"


@dataclass
class JsonlLog:
    """Everything read from one ``--log-jsonl`` run of llama-completion."""

    text_pieces: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # info/warn/error lines, in order
    errors: list[str] = field(default_factory=list)
    raw_lines: list[str] = field(default_factory=list)  # anything that was not JSON
    memory: MemoryBreakdown = field(default_factory=MemoryBreakdown)
    _held: list[str] = field(default_factory=list, repr=False)

    def feed(self, line: str) -> str | None:
        """Take one stdout line; return the generated text it carries, if any."""
        stripped = line.strip()
        if not stripped:
            return None
        try:
            record = json.loads(stripped)
        except json.JSONDecodeError:
            self.raw_lines.append(line.rstrip("\n"))
            return None
        if not isinstance(record, dict):
            self.raw_lines.append(line.rstrip("\n"))
            return None
        kind = record.get("type")
        if kind == "fit_memory_breakdown":
            self.memory = memory_from_json(record.get("data", {}))
            return None
        if kind != "log":
            return None
        msg = str(record.get("msg", ""))
        level = record.get("level")
        if level == "none":
            self.text_pieces.append(msg)
            if msg in (_END_OF_TEXT, "\n\n"):
                # Possibly llama-completion's closing decoration: hold it back until we
                # know more text follows, so live output matches the final ``text``.
                self._held.append(msg)
                return None
            out = "".join(self._held) + msg
            self._held.clear()
            return out
        self.messages.append(msg.rstrip("\n"))
        if level == "error":
            self.errors.append(msg.rstrip("\n"))
        return None

    def _generated(self) -> list[str]:
        pieces = list(self.text_pieces)
        if pieces and pieces[-1] == "\n\n":
            pieces.pop()
        return pieces

    @property
    def stopped_by_eos(self) -> bool:
        """True when the model ended its answer itself (llama-completion printed "[end of text]")."""
        pieces = self._generated()
        return bool(pieces) and pieces[-1] == _END_OF_TEXT

    @property
    def text(self) -> str:
        """The generated text, without llama-completion's closing decorations."""
        pieces = self._generated()
        if self.stopped_by_eos:
            pieces.pop()
        return "".join(pieces)

    @property
    def perf(self) -> PerfMetrics | None:
        return parse_perf("\n".join(self.messages))

    def tail(self, n: int = 25) -> str:
        lines = [m for m in self.messages if m.strip()] + self.raw_lines
        return "\n".join(lines[-n:])


def read_jsonl(lines: Iterable[str]) -> JsonlLog:
    """Parse a whole ``--log-jsonl`` output (for saved logs and tests)."""
    log = JsonlLog()
    for line in lines:
        log.feed(line)
    return log


_BUFFER = re.compile(r"(?P<where>\S+)\s+(?P<kind>model|KV|compute|output) buffer size =\s*(?P<mib>[0-9.]+) MiB")


def parse_buffer_sizes(text: str) -> dict[tuple[str, str], float]:
    """The ``… buffer size = X MiB`` lines (two decimals, finer than the breakdown table).

    Keys are ``(kind, where)``, e.g. ``("KV", "CPU")`` or ``("compute", "CUDA0")``; when a
    line repeats (llama.cpp may reserve twice), the last value wins.
    """
    sizes: dict[tuple[str, str], float] = {}
    for m in _BUFFER.finditer(text):
        sizes[(m["kind"], m["where"])] = float(m["mib"])
    return sizes
