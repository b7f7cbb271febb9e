"""Deploy-time settings of the Modal apps, and how they reach the containers.

You choose the GPU, the model and the scaling of the Modal apps with environment variables on
*your* machine when you run ``modal run`` / ``modal deploy``. But a Modal container imports the
app's module again, in its own environment, to find the function it runs: a setting read from
``os.environ`` at import time would take its *default* there unless the image carries it. So
the settings are read in exactly one place (:meth:`ModalSettings.from_env`) and written into
every course image as ``ENV`` lines (:meth:`ModalSettings.to_env`): the container reads back
the same values the deploying machine chose. ``python -m helpers modal-plan`` checks it.

* ``LLAMACPP_COURSE_GPU`` (``L4``): the GPU type, with an optional count (``H100:2``);
* ``LLAMACPP_COURSE_REPO`` / ``LLAMACPP_COURSE_QUANT`` (``Qwen/Qwen3-8B-GGUF`` / ``Q5_K_M``): the model;
* ``LLAMACPP_COURSE_PUBLIC`` (``0``): ``1`` serves without an API key (anyone with the URL can use your GPU);
* ``LLAMACPP_COURSE_MIN_CONTAINERS`` (``0``): containers kept warm, and billed, while nobody calls;
* ``LLAMACPP_COURSE_SCALEDOWN`` (``300``): idle seconds before a container stops;
* ``LLAMACPP_COURSE_BACKEND_SAMPLING`` (``1``): ``0`` picks tokens on the CPU instead of the GPU;
* ``LLAMACPP_COURSE_CUDA_ARCH`` (from the GPU type): CUDA architectures to compile llama.cpp for;
* ``LLAMACPP_COURSE_HF_SECRET`` (none): a Modal Secret holding ``HF_TOKEN``, for gated repositories
  and the Hub's higher rate limits;
* ``LLAMACPP_COURSE_APP_NAME`` (``llamacpp-server``): the server app's name. One deployment per
  model needs one name per model (``LLAMACPP_COURSE_APP_NAME=qwen3-4b LLAMACPP_COURSE_REPO=…``):
  deploying under a name that is already deployed replaces that deployment;
* ``LLAMACPP_COURSE_ROUTER`` (``0``): ``1`` serves every model in the volume from one GPU
  (llama-server's router mode; the request's ``model`` picks one) instead of the one model above;
* ``LLAMACPP_COURSE_MODELS_MAX`` (``2``, :data:`helpers.server_config.ROUTER_MODELS_MAX`): in router
  mode, models loaded at once (0: no limit); the server lowers it when that many would not fit the GPU.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from helpers import config
from helpers.gpus import ModalGpu, parse_modal_gpu
from helpers.server_config import ROUTER_MODELS_MAX

PREFIX = "LLAMACPP_COURSE_"
_CUDA_ARCH = re.compile(r"^\d{2,3}[af]?(-real|-virtual)?(;\d{2,3}[af]?(-real|-virtual)?)*$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: What Modal accepts as an app name (modal._utils.name_utils.is_valid_object_name), less ``ap-`` ids.
_APP_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(PREFIX + name, "").strip().lower()
    if value == "":
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"${PREFIX}{name} must be 1 or 0, got {value!r}")


@dataclass(frozen=True)
class ModalSettings:
    """Every deploy-time choice of the course's Modal apps, validated."""

    gpu: ModalGpu
    repo: str = config.DEFAULT_HF_REPO
    quant: str = config.DEFAULT_QUANT
    public: bool = False
    min_containers: int = 0
    scaledown_s: int = 300
    backend_sampling: bool = True
    cuda_architectures: str = ""
    hf_secret: str | None = None
    app_name: str = config.MODAL_SERVER_APP
    router: bool = False
    models_max: int = ROUTER_MODELS_MAX
    #: Restore containers from a GPU memory snapshot instead of loading the model (Modal alpha).
    snapshot: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ModalSettings:
        """Read and check the ``LLAMACPP_COURSE_*`` variables (default: this process's environment)."""
        from helpers.hub import parse_repo_id

        env = os.environ if env is None else env
        try:
            gpu = parse_modal_gpu(env.get(PREFIX + "GPU") or config.DEFAULT_GPU)
        except ValueError as exc:
            raise ValueError(f"${PREFIX}GPU: {exc}") from None
        repo = env.get(PREFIX + "REPO") or config.DEFAULT_HF_REPO
        try:
            parse_repo_id(repo)
        except ValueError as exc:
            raise ValueError(f"${PREFIX}REPO: {exc}") from None
        quant = (env.get(PREFIX + "QUANT") or config.DEFAULT_QUANT).strip()
        if not re.fullmatch(r"[A-Za-z0-9_]+", quant):
            raise ValueError(f"${PREFIX}QUANT={quant!r} is not a quantization name such as Q5_K_M")
        arch = (env.get(PREFIX + "CUDA_ARCH") or gpu.cuda_architectures).strip()
        if not _CUDA_ARCH.match(arch):
            raise ValueError(f"${PREFIX}CUDA_ARCH={arch!r} is not a CUDA architecture list such as 89 or 100;103")
        secret = (env.get(PREFIX + "HF_SECRET") or "").strip() or None
        if secret is not None and not _SECRET_NAME.match(secret):
            raise ValueError(f"${PREFIX}HF_SECRET={secret!r} is not a Modal Secret name")
        app_name = (env.get(PREFIX + "APP_NAME") or config.MODAL_SERVER_APP).strip()
        if not _APP_NAME.match(app_name) or re.fullmatch(r"ap-[A-Za-z0-9]{22}", app_name):
            raise ValueError(f"${PREFIX}APP_NAME={app_name!r} is not a Modal app name: use up to 64 letters, "
                             "digits, '-', '_' or '.', e.g. llamacpp-qwen3-4b")
        return cls(
            gpu=gpu, repo=repo, quant=quant, public=_flag(env, "PUBLIC", False),
            min_containers=config.env_int(PREFIX + "MIN_CONTAINERS", 0, env, minimum=0),
            scaledown_s=config.env_int(PREFIX + "SCALEDOWN", 300, env, minimum=2),
            backend_sampling=_flag(env, "BACKEND_SAMPLING", True), cuda_architectures=arch, hf_secret=secret,
            app_name=app_name, router=_flag(env, "ROUTER", False),
            models_max=config.env_int(PREFIX + "MODELS_MAX", ROUTER_MODELS_MAX, env, minimum=0),
            snapshot=_flag(env, "SNAPSHOT", False),
        )

    def to_env(self) -> dict[str, str]:
        """The same settings as environment variables: ``from_env(s.to_env()) == s``."""
        env = {
            "GPU": self.gpu.spec, "REPO": self.repo, "QUANT": self.quant, "PUBLIC": "1" if self.public else "0",
            "MIN_CONTAINERS": str(self.min_containers), "SCALEDOWN": str(self.scaledown_s),
            "BACKEND_SAMPLING": "1" if self.backend_sampling else "0", "CUDA_ARCH": self.cuda_architectures,
            "APP_NAME": self.app_name, "ROUTER": "1" if self.router else "0", "MODELS_MAX": str(self.models_max),
            "SNAPSHOT": "1" if self.snapshot else "0",
        }
        if self.hf_secret:
            env["HF_SECRET"] = self.hf_secret
        return {PREFIX + k: v for k, v in env.items()}
