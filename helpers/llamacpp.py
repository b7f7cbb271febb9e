"""Get the pinned llama.cpp source, build it, and find its binaries.

One recipe serves every place llama.cpp is built: this machine's CPU, a local NVIDIA GPU,
and the Modal image (``helpers.modal_*`` reuse :func:`cmake_definitions`,
:data:`BUILD_TARGETS` and :func:`source_fetch_script`). Builds are cached outside the
repository, keyed by the llama.cpp commit and the exact cmake flags, so a fresh clone reuses
them and a flag change never reuses a stale build.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from helpers import process
from helpers.config import (
    LLAMA_CPP_BUILD_NUMBER,
    LLAMA_CPP_COMMIT,
    LLAMA_CPP_PYTHON_VERSION,
    LLAMA_CPP_SDIST_NAME,
    LLAMA_CPP_SDIST_SHA256,
    cache_dir,
    cache_lock,
)
from helpers.errors import BuildError

#: What the course needs: one-shot generation, the CLI chat, the server, the quantizer and
#: the benchmark tool. Building only these (not all ~40 tools) halves the build time.
BUILD_TARGETS: tuple[str, ...] = (
    "llama-completion",
    "llama-cli",
    "llama-server",
    "llama-quantize",
    "llama-bench",
)

#: Environment variable that forces the CUDA build on (1) or off (0); unset = detect.
CUDA_ENV = "LLAMACPP_COURSE_CUDA"

_SDIST_PREFIX = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"


@dataclass(frozen=True)
class SourcePatch:
    """A literal replacement in the pinned source, with the reason it exists."""

    path: str
    old: str
    new: str
    why: str


#: Our changes to the pinned llama.cpp, each a literal replacement with its reason. They are
#: applied wherever the course builds llama.cpp (this machine, a local GPU, the Modal image).
SOURCE_PATCHES: tuple[SourcePatch, ...] = (
    # Its logger prints from a worker thread and the programs may exit before that thread has
    # written everything (ggml-org/llama.cpp#22142): on a 2-core machine llama-completion lost
    # its generated text and speed lines in about one run in four.
    SourcePatch(
        path="tools/completion/completion.cpp",
        old="    atexit([]() { console::cleanup(); });\n",
        new="    atexit([]() { console::cleanup(); common_log_pause(common_log_main()); });\n",
        why="drain the asynchronous logger before exit, so no output is lost",
    ),
    # CPUs with AMX (Intel Xeon 4th generation and later) run quantized matrix products on
    # tiles whose shapes come from a 64-byte config. GCC's _tile_loadconfig() declares that it
    # reads only 8 bytes of it, so GCC 12 at -O3 (Debian 12's compiler) drops the stores of the
    # rows and columns into the stack copy: ldtilecfg loads "palette 1, no tile configured"
    # and the first tile instruction kills the process (SIGILL) on every quantized model.
    # A constant config lives complete in read-only memory, whatever the compiler assumes.
    SourcePatch(
        path="ggml/src/ggml-cpu/amx/mmq.cpp",
        old=(
            "    alignas(64) tile_config_t tc = {};\n"
            "    tc.palette_id = 1;\n"
            "    tc.start_row = 0;\n"
            "    tc.rows[0] = 8;   tc.colsb[0] = 64;\n"
            "    tc.rows[1] = 8;   tc.colsb[1] = 64;\n"
            "    tc.rows[2] = 16;  tc.colsb[2] = 32;\n"
            "    tc.rows[3] = 16;  tc.colsb[3] = 32;\n"
            "    tc.rows[4] = 16;  tc.colsb[4] = 64;\n"
            "    tc.rows[5] = 16;  tc.colsb[5] = 64;\n"
            "    tc.rows[6] = 16;  tc.colsb[6] = 64;\n"
            "    tc.rows[7] = 16;  tc.colsb[7] = 64;\n"
        ),
        new=(
            "    // static: GCC's _tile_loadconfig() claims to read 8 bytes, and at -O3 GCC 12 dropped\n"
            "    // the rows/colsb stores to a stack copy (every tile unconfigured -> SIGILL).\n"
            "    alignas(64) static constexpr tile_config_t tc = [] {\n"
            "        tile_config_t c = {};\n"
            "        c.palette_id = 1;\n"
            "        c.start_row = 0;\n"
            "        c.rows[0] = 8;   c.colsb[0] = 64;\n"
            "        c.rows[1] = 8;   c.colsb[1] = 64;\n"
            "        c.rows[2] = 16;  c.colsb[2] = 32;\n"
            "        c.rows[3] = 16;  c.colsb[3] = 32;\n"
            "        c.rows[4] = 16;  c.colsb[4] = 64;\n"
            "        c.rows[5] = 16;  c.colsb[5] = 64;\n"
            "        c.rows[6] = 16;  c.colsb[6] = 64;\n"
            "        c.rows[7] = 16;  c.colsb[7] = 64;\n"
            "        return c;\n"
            "    }();\n"
        ),
        why="keep the AMX tile config in static storage so no compiler can drop part of it",
    ),
)


def patches_digest(patches: tuple[SourcePatch, ...] = SOURCE_PATCHES) -> str:
    blob = json.dumps([[p.path, p.old, p.new] for p in patches])
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def apply_patches(tree: Path, patches: tuple[SourcePatch, ...] = SOURCE_PATCHES) -> None:
    """Apply :data:`SOURCE_PATCHES` to a source tree (idempotent; loud if it doesn't fit)."""
    for patch in patches:
        target = tree / patch.path
        text = target.read_text()
        if patch.new in text:
            continue
        if text.count(patch.old) != 1:
            raise BuildError(f"patch for {patch.path} does not apply: the pinned source changed? ({patch.why})")
        target.write_text(text.replace(patch.old, patch.new))


def patch_command(tree: str) -> str:
    """One shell line applying :data:`SOURCE_PATCHES` to ``tree`` inside an image.

    Only ``python3`` is needed there (not this package). The program travels base64-encoded,
    so the line has no newline and no quote to escape: Modal turns each image command into
    one Dockerfile instruction, and a Dockerfile instruction ends at the end of its line.
    """
    payload = base64.b64encode(json.dumps([[p.path, p.old, p.new] for p in SOURCE_PATCHES]).encode()).decode()
    program = (
        "import base64,json,pathlib,sys\n"
        "root=pathlib.Path(sys.argv[1])\n"
        f"for path,old,new in json.loads(base64.b64decode({payload!r})):\n"
        "    f=root/path; t=f.read_text()\n"
        "    if new in t: continue\n"
        "    if t.count(old)!=1: sys.exit('patch does not apply: '+path)\n"
        "    f.write_text(t.replace(old,new))\n"
    )
    encoded = base64.b64encode(program.encode()).decode()
    return f"python3 -c \"import base64; exec(base64.b64decode('{encoded}'))\" {shlex.quote(tree)}"


def cmake_definitions(
    *,
    cuda: bool = False,
    cuda_architectures: str | None = None,
    portable: bool = False,
) -> dict[str, str]:
    """The ``-D`` definitions for one build, as plain data.

    * Release, static (``BUILD_SHARED_LIBS=OFF``): the binaries can be copied anywhere —
      into the cache, into an image — without dragging shared libraries along.
    * No tests, examples or the unified ``llama`` app: we build named targets anyway, and
      leaving them out keeps configure quick.
    * ``LLAMA_BUILD_COMMIT``/``LLAMA_BUILD_NUMBER``: the sdist is not a git checkout, so
      llama.cpp cannot find its own version; we tell it, so ``--version`` and logs name the
      pin (``b11312-0c1e570``).
    * ``LLAMA_USE_PREBUILT_UI=OFF``: llama-server's web UI is built from the pinned source by
      :mod:`helpers.webui` (also in the Modal image) instead of downloaded at build time.
    * ``cuda``: ``GGML_CUDA=ON``. ``portable`` turns ``GGML_NATIVE`` off, which an image
      built on one machine and run on another needs; ``cuda_architectures`` pins the GPU
      generation (89 = Ada, the L4).

    Everything else is left to llama.cpp's platform defaults (e.g. Metal on a Mac).
    """
    defs = {
        "CMAKE_BUILD_TYPE": "Release",
        "BUILD_SHARED_LIBS": "OFF",
        "LLAMA_BUILD_TESTS": "OFF",
        "LLAMA_BUILD_EXAMPLES": "OFF",
        "LLAMA_BUILD_APP": "OFF",
        "LLAMA_BUILD_COMMIT": LLAMA_CPP_COMMIT[:7],
        "LLAMA_BUILD_NUMBER": str(LLAMA_CPP_BUILD_NUMBER),
        "LLAMA_USE_PREBUILT_UI": "OFF",
    }
    if cuda:
        defs["GGML_CUDA"] = "ON"
    if portable:
        defs["GGML_NATIVE"] = "OFF"
    if cuda_architectures:
        defs["CMAKE_CUDA_ARCHITECTURES"] = cuda_architectures
    return defs


def configure_command(source: str | Path, build: str | Path, defs: Mapping[str, str]) -> list[str]:
    """``cmake`` configure argument list for ``defs`` (sorted, so it is stable)."""
    return ["cmake", "-S", str(source), "-B", str(build)] + [f"-D{k}={v}" for k, v in sorted(defs.items())]


def build_command(build: str | Path, targets: tuple[str, ...] = BUILD_TARGETS, jobs: int | str | None = None
                  ) -> list[str]:
    """``cmake --build`` argument list for ``targets`` with ``jobs`` parallel compilers."""
    return ["cmake", "--build", str(build), "--config", "Release", "-j", str(jobs or os.cpu_count() or 2),
            "--target", *targets]


def source_fetch_script(dest: str, work: str = "/tmp/sdist") -> list[str]:
    """Shell commands that put the pinned llama.cpp source at ``dest`` (for images).

    The same steps as :func:`fetch_source`: download the sdist from PyPI, check its
    sha256, unpack only ``vendor/llama.cpp``, apply :data:`SOURCE_PATCHES`. The first
    command is the only one that needs a network.
    """
    parent = dest.rstrip("/").rsplit("/", 1)[0] or "/"
    return [
        f"python3 -m pip download --no-cache-dir --no-binary :all: --no-deps -d {work} "
        f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
        f"echo '{LLAMA_CPP_SDIST_SHA256}  {work}/{LLAMA_CPP_SDIST_NAME}' | sha256sum -c -",
        f"mkdir -p {parent} && tar -xzf {work}/{LLAMA_CPP_SDIST_NAME} -C {work} {_SDIST_PREFIX.rstrip('/')}",
        f"mv {work}/{_SDIST_PREFIX} {dest}",
        patch_command(dest),
    ]


#: Where the Modal image downloads, unpacks and builds llama.cpp. The whole folder is deleted
#: in the same RUN instruction that creates it, so none of it becomes part of the image.
IMAGE_WORK_DIR = "/tmp/llama.cpp"
#: Where the image keeps the binaries (``$LLAMACPP_COURSE_BIN`` points here).
IMAGE_BIN_DIR = "/opt/llama.cpp/bin"
#: Parallel compile jobs in the image build. "As many jobs as cores" depends on a machine we do
#: not choose and can run a large builder out of memory; with 8 jobs the build for one CUDA
#: architecture peaked at 716 MB in its largest compiler process and took 11.5 minutes on 16
#: cores (tests/data/image_build_sm89).
IMAGE_BUILD_JOBS = 8


def image_build_steps(cuda_architectures: str) -> list[str]:
    """The shell steps that build llama.cpp with CUDA inside the Modal inference image.

    Same source, patches, web UI build, flags and targets as the local build, plus
    ``GGML_CUDA=ON``, the GPU architectures and ``GGML_NATIVE=OFF`` (the image is built on one
    machine and runs on another). The last step removes the sdist, the UI's node_modules, the
    source and the build tree.
    """
    work = IMAGE_WORK_DIR
    source, build = f"{work}/src", f"{work}/build"
    from helpers.webui import image_steps

    defs = cmake_definitions(cuda=True, cuda_architectures=cuda_architectures, portable=True)
    binaries = " ".join(f"{build}/bin/{t}" for t in BUILD_TARGETS)
    return source_fetch_script(source, work=f"{work}/sdist") + image_steps(source, f"{work}/ui") + [
        shlex.join(configure_command(source, build, defs)),
        shlex.join(build_command(build, BUILD_TARGETS, jobs=IMAGE_BUILD_JOBS)),
        f"mkdir -p {IMAGE_BIN_DIR} && cp {binaries} {IMAGE_BIN_DIR}/",
        f"rm -rf {work}",
    ]


def image_build_command(cuda_architectures: str) -> str:
    """:func:`image_build_steps` as one shell line: one Dockerfile ``RUN``, one image layer.

    Files deleted by a later instruction still take space in the earlier layer, so the
    build and its cleanup must share one instruction for the image to stay small.
    """
    return " && ".join(image_build_steps(cuda_architectures))


def cuda_available() -> bool:
    """True when this machine can build *and* run CUDA code.

    ``nvcc`` alone is not enough (CI images ship it without a GPU), so we also ask
    ``nvidia-smi`` for a device. ``$LLAMACPP_COURSE_CUDA`` (0/1) overrides the guess.
    """
    forced = os.environ.get(CUDA_ENV)
    if forced is not None and forced.strip() != "":
        return forced.strip().lower() not in ("0", "false", "no", "off")
    if not shutil.which("nvcc") or not shutil.which("nvidia-smi"):
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


@dataclass(frozen=True)
class BuildSpec:
    """Which build we want: the definitions and targets, and a cache key derived from them."""

    defs: tuple[tuple[str, str], ...]
    targets: tuple[str, ...] = BUILD_TARGETS

    @classmethod
    def local(cls, cuda: bool | None = None) -> BuildSpec:
        """The build for this machine: CPU, or CUDA when a GPU and nvcc are present."""
        use_cuda = cuda_available() if cuda is None else cuda
        return cls(tuple(sorted(cmake_definitions(cuda=use_cuda).items())))

    @property
    def cuda(self) -> bool:
        return dict(self.defs).get("GGML_CUDA") == "ON"

    def key(self) -> str:
        blob = json.dumps({"defs": self.defs, "targets": self.targets, "machine": platform.machine(),
                           "patches": patches_digest(), "web_ui": "npm build of tools/ui"})
        digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
        return f"{LLAMA_CPP_COMMIT[:12]}-{'cuda' if self.cuda else 'cpu'}-{digest}"


def fetch_source(root: Path | None = None, quiet: bool = False) -> Path:
    """Download (once) the pinned sdist and unpack ``vendor/llama.cpp``; return its path.

    The sdist's sha256 is checked against :data:`LLAMA_CPP_SDIST_SHA256`: a different file
    would silently mean a different llama.cpp. The tree is unpacked into a temporary folder,
    patched (:data:`SOURCE_PATCHES`) and renamed into place, so an interrupted unpack never
    looks complete.
    """
    root = root or cache_dir() / "src"
    target = root / f"llama.cpp-{LLAMA_CPP_COMMIT[:12]}-p{patches_digest()}"
    if (target / "CMakeLists.txt").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    sdist = root / LLAMA_CPP_SDIST_NAME
    if not sdist.exists() or sha256_file(sdist) != LLAMA_CPP_SDIST_SHA256:
        _download_sdist(root, quiet)
    digest = sha256_file(sdist)
    if digest != LLAMA_CPP_SDIST_SHA256:
        sdist.unlink()
        raise BuildError(
            f"{sdist.name} has sha256 {digest}, expected {LLAMA_CPP_SDIST_SHA256}. "
            "The file on PyPI is not the one this course pins; check your index "
            "(pip config list) or update helpers/config.py deliberately."
        )
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
    try:
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(_SDIST_PREFIX)]
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(tmp, members=members)
        apply_patches(tmp / _SDIST_PREFIX)
        os.replace(tmp / _SDIST_PREFIX, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _download_sdist(root: Path, quiet: bool) -> None:
    if not quiet:
        print(f"Downloading llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} sdist from PyPI "
              f"(llama.cpp {LLAMA_CPP_COMMIT[:7]}, ~77 MB)…", file=sys.stderr, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
               "--disable-pip-version-check", "-q", "-d", str(tmp),
               f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not (tmp / LLAMA_CPP_SDIST_NAME).exists():
            raise BuildError(
                "Could not download the llama.cpp source from PyPI "
                f"({' '.join(cmd[2:])}).\n{proc.stderr[-2000:]}\n"
                "Check that this machine can reach PyPI (pip index versions llama-cpp-python)."
            )
        os.replace(tmp / LLAMA_CPP_SDIST_NAME, root / LLAMA_CPP_SDIST_NAME)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bin_dir(spec: BuildSpec | None = None) -> Path:
    """Where the binaries of ``spec`` (default: this machine's build) are installed."""
    spec = spec or BuildSpec.local()
    return cache_dir() / "bin" / spec.key()


def is_built(spec: BuildSpec | None = None) -> bool:
    spec = spec or BuildSpec.local()
    directory = bin_dir(spec)
    return (directory / "build.json").exists() and all((directory / t).exists() for t in spec.targets)


def binary(name: str, spec: BuildSpec | None = None, build_if_missing: bool = True) -> Path:
    """Path to one llama.cpp binary, building llama.cpp first if needed.

    ``$LLAMACPP_COURSE_BIN`` points at an existing folder of binaries instead (for a
    llama.cpp you built yourself); it is used as-is.
    """
    override = os.environ.get("LLAMACPP_COURSE_BIN")
    if override:
        path = Path(override) / name
        if not path.exists():
            raise BuildError(f"$LLAMACPP_COURSE_BIN={override} has no {name}; unset it or build that target.")
        return path
    spec = spec or BuildSpec.local()
    if name not in spec.targets:
        raise ValueError(f"{name!r} is not one of the built targets: {', '.join(spec.targets)}")
    if not is_built(spec):
        if not build_if_missing:
            raise BuildError(f"llama.cpp is not built yet for {spec.key()}; run `make llama` "
                             "(or python -m helpers build).")
        build(spec)
    return bin_dir(spec) / name


def forget(spec: BuildSpec) -> None:
    """Drop the cached binaries and build tree of ``spec`` (the next :func:`build` starts over)."""
    with cache_lock(spec.key()):
        for folder in (bin_dir(spec), cache_dir() / "build" / spec.key()):
            shutil.rmtree(folder, ignore_errors=True)


_PROGRESS = re.compile(r"^\[\s*(\d+)%\]")


def build(spec: BuildSpec | None = None, jobs: int | None = None, progress: bool = True) -> Path:
    """Build llama.cpp for ``spec`` unless the cache has it; return the binaries' folder.

    Output goes to ``build.log`` in the build folder; a progress bar (terminal or notebook)
    follows cmake's percentage. The binaries are copied into a temporary folder and renamed
    into place only when every target is there, so a failed or interrupted build never
    leaves a half-filled cache entry that a later call would trust.
    """
    spec = spec or BuildSpec.local()
    if is_built(spec):
        return bin_dir(spec)
    for tool in ("cmake", "c++"):
        if not shutil.which(tool):
            raise BuildError(f"`{tool}` is not on PATH. Install it (Debian/Ubuntu: apt-get install "
                             "cmake build-essential; macOS: xcode-select --install && brew install cmake).")
    with cache_lock(spec.key()):
        if is_built(spec):
            return bin_dir(spec)
        source = fetch_source(quiet=not progress)
        from helpers import webui

        dist = webui.build_ui(source, progress=progress)
        if dist is not None:
            webui.place_in_tree(dist, source)
        build_tree = cache_dir() / "build" / spec.key()
        build_tree.mkdir(parents=True, exist_ok=True)
        log_path = build_tree / "build.log"
        started = time.monotonic()
        with open(log_path, "w") as log:
            _run_logged(configure_command(source, build_tree, dict(spec.defs)), log, log_path, None)
            bar = _progress_bar(spec, progress)
            try:
                _run_logged(build_command(build_tree, spec.targets, jobs), log, log_path, bar)
            finally:
                if bar is not None:
                    bar.close()
        seconds = time.monotonic() - started
        final = bin_dir(spec)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".install-", dir=final.parent))
        try:
            for target in spec.targets:
                shutil.copy2(build_tree / "bin" / target, tmp / target)
            (tmp / "build.json").write_text(json.dumps({
                "llama_cpp_commit": LLAMA_CPP_COMMIT,
                "defs": dict(spec.defs),
                "targets": list(spec.targets),
                "build_seconds": round(seconds, 1),
                "web_ui": (source / "tools" / "ui" / "dist" / "index.html").exists(),
            }, indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if progress:
            print(f"llama.cpp {LLAMA_CPP_COMMIT[:7]} built in {seconds:.0f} s → {final}", file=sys.stderr, flush=True)
        return final


def _progress_bar(spec: BuildSpec, enabled: bool):  # noqa: ANN202 - tqdm type varies
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=100, unit="%", desc=f"Building llama.cpp ({'CUDA' if spec.cuda else 'CPU'})",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}]")


def _run_logged(cmd: list[str], log, log_path: Path, bar) -> None:  # noqa: ANN001
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    # Guarded like a server: an interrupted or killed build takes cmake's compiler jobs with it.
    proc = process.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            m = _PROGRESS.match(line)
            if bar is not None and m:
                bar.update(max(0, int(m.group(1)) - bar.n))
        proc.wait()
    finally:
        rc = process.stop(proc, grace_s=2.0)
    log.flush()
    if rc != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise BuildError(f"`{' '.join(cmd[:3])} …` failed with exit code {rc}. Full log: {log_path}\n{tail}")
