"""The shape of a dense Llama-family model, from a Hugging Face config or a GGUF header.

Memory and file size depend only on a model's *shape*: how many layers, how wide, how many
attention heads, how big the vocabulary — not on the values of its weights. ``ModelShape``
holds exactly that, can be read from the three places a learner meets it (a ``config.json``,
a local GGUF file, a GGUF file on the Hub) and lists the tensors ``convert_hf_to_gguf.py``
would write, with their shapes.

Supported GGUF architectures: ``qwen3`` (per-head q/k norms), ``qwen2`` (q/k/v biases; also
Qwen2.5 and the DeepSeek-R1 Qwen distills) and ``llama`` (Llama 2/3.x, Mistral, the Llama
distills). Others raise a clear error rather than a wrong number, and so does a config that
lacks a field the shape needs: the message names the missing keys.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from numbers import Integral
from pathlib import Path
from typing import Any

SUPPORTED_ARCHS = ("qwen3", "qwen2", "llama")
_HF_MODEL_TYPES = {"qwen3": "qwen3", "qwen2": "qwen2", "llama": "llama", "mistral": "llama"}


@dataclass(frozen=True)
class ModelShape:
    arch: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    #: Tied embeddings: the file has no ``output.weight``; the embedding doubles as output.
    tied: bool = False
    #: Llama 3.1-style RoPE scaling stores a small ``rope_freqs.weight`` tensor.
    rope_freqs: bool = False
    n_ctx_train: int = 0
    name: str = ""

    def __post_init__(self) -> None:
        if self.arch not in SUPPORTED_ARCHS:
            raise ValueError(f"architecture {self.arch!r} is not supported; supported: {', '.join(SUPPORTED_ARCHS)}")
        least = {"n_layer": 1, "n_embd": 1, "n_ff": 1, "n_head": 1, "n_head_kv": 1, "head_dim": 1, "n_vocab": 1,
                 "n_ctx_train": 0}
        bad = [f"{k}={getattr(self, k)!r}" for k, low in least.items()
               if not isinstance(getattr(self, k), Integral) or getattr(self, k) < low]
        if bad:
            raise ValueError(f"model shape {self.name or self.arch!r} has impossible sizes ({', '.join(bad)}); "
                             "sizes are whole numbers >= 1 (n_ctx_train >= 0, 0 = unknown)")
        if self.n_head % self.n_head_kv:
            raise ValueError(f"n_head ({self.n_head}) must be a multiple of n_head_kv ({self.n_head_kv})")

    @property
    def n_embd_q(self) -> int:
        return self.n_head * self.head_dim

    @property
    def n_embd_kv(self) -> int:
        """Width of K (and of V) per token per layer: what the KV cache stores."""
        return self.n_head_kv * self.head_dim

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """(GGUF name, numpy shape) of every tensor, in convert_hf_to_gguf's order."""
        e, q, kv, f, d = self.n_embd, self.n_embd_q, self.n_embd_kv, self.n_ff, self.head_dim
        out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (self.n_vocab, e))]
        for i in range(self.n_layer):
            b = f"blk.{i}."
            out.append((b + "attn_norm.weight", (e,)))
            out.append((b + "attn_q.weight", (q, e)))
            if self.arch == "qwen2":
                out.append((b + "attn_q.bias", (q,)))
            out.append((b + "attn_k.weight", (kv, e)))
            if self.arch == "qwen2":
                out.append((b + "attn_k.bias", (kv,)))
            out.append((b + "attn_v.weight", (kv, e)))
            if self.arch == "qwen2":
                out.append((b + "attn_v.bias", (kv,)))
            out.append((b + "attn_output.weight", (e, q)))
            if self.arch == "qwen3":
                out.append((b + "attn_q_norm.weight", (d,)))
                out.append((b + "attn_k_norm.weight", (d,)))
            out.append((b + "ffn_norm.weight", (e,)))
            out.append((b + "ffn_gate.weight", (f, e)))
            out.append((b + "ffn_up.weight", (f, e)))
            out.append((b + "ffn_down.weight", (e, f)))
        out.append(("output_norm.weight", (e,)))
        if not self.tied:
            out.append(("output.weight", (self.n_vocab, e)))
        if self.rope_freqs:
            out.append(("rope_freqs.weight", (d // 2,)))
        return out

    def parameter_count(self) -> int:
        total = 0
        for _, shape in self.tensors():
            n = 1
            for dim in shape:
                n *= dim
            total += n
        return total

    def with_(self, **changes: Any) -> ModelShape:
        return replace(self, **changes)


def from_hf_config(config: dict[str, Any] | str | os.PathLike[str], name: str = "") -> ModelShape:
    """Shape from a Hugging Face ``config.json`` (a dict, a path, or a Hub repo id).

    ``tie_word_embeddings`` decides whether the GGUF has an ``output.weight``; a missing
    ``head_dim`` means ``hidden_size / num_attention_heads`` as in transformers.
    """
    where = "the config"
    if not isinstance(config, dict):
        config, name, where = _load_config(config), name or str(config), f"the config at {config}"
    if not isinstance(config, dict):
        raise ValueError(f"{where} is a JSON {type(config).__name__}, not an object; pass a model's config.json")
    if "model_type" not in config:
        raise ValueError(f"{where} has no model_type; pass a Hugging Face model's config.json "
                         f"(model_type one of {', '.join(sorted(_HF_MODEL_TYPES))})")
    model_type = config["model_type"]
    if model_type not in _HF_MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r} is not supported; supported: {', '.join(sorted(_HF_MODEL_TYPES))}")
    missing = [k for k in _HF_REQUIRED if config.get(k) is None]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}; pass the model's complete config.json "
                         "(these fields set its shape)")
    values = {k: _whole(config, k, where) for k in (*_HF_REQUIRED, "num_key_value_heads", "head_dim",
                                                    "max_position_embeddings") if config.get(k) is not None}
    n_head, hidden = values["num_attention_heads"], values["hidden_size"]
    scaling = config.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type") or scaling.get("type") if isinstance(scaling, dict) else None
    return ModelShape(
        arch=_HF_MODEL_TYPES[model_type],
        n_layer=values["num_hidden_layers"],
        n_embd=hidden,
        n_ff=values["intermediate_size"],
        n_head=n_head,
        n_head_kv=values.get("num_key_value_heads") or n_head,
        head_dim=values.get("head_dim") or (hidden // n_head if n_head > 0 else 0),
        n_vocab=values["vocab_size"],
        tied=bool(config.get("tie_word_embeddings", False)),
        rope_freqs=_HF_MODEL_TYPES[model_type] == "llama" and rope_type == "llama3",
        n_ctx_train=values.get("max_position_embeddings") or 0,
        name=name or str(config.get("_name_or_path", "")),
    )


#: The ``config.json`` fields without which a shape cannot be known (the others have defaults).
_HF_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def _whole(config: dict[str, Any], key: str, where: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit():
        raise ValueError(f"{key} in {where} is {value!r}, not a whole number >= 0; pass the model's own config.json")
    return int(value)


def _load_config(source: str | os.PathLike[str]) -> Any:
    path = Path(source).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            hint = " (a .gguf file goes to --gguf or --model)" if path.suffix == ".gguf" else ""
            raise ValueError(f"{path} is not a JSON config ({exc}); pass a model's config.json{hint}") from None
    text = str(source)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")) and not path.exists():
        return _hub_config(text)
    raise FileNotFoundError(f"no config.json at {source}; give a path to a config.json, a folder holding one, "
                            "or a Hub repo id (org/name)")


def _hub_config(repo_id: str) -> Any:
    """``config.json`` of a Hub repository, with one-line errors for the usual failures."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    from helpers.hub import hub_reachable

    offline = (f"the Hugging Face Hub is not reachable from here, so the config.json of {repo_id} cannot be "
               "fetched; give a local config.json, or --model with a built-in config such as Qwen3-8B")
    if not hub_reachable():
        raise ConnectionError(offline)
    try:
        return json.loads(Path(hf_hub_download(repo_id, "config.json")).read_text())
    except GatedRepoError:
        raise PermissionError(f"{repo_id} is gated: accept its terms on huggingface.co and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"no repository {repo_id!r} on the Hugging Face Hub (or it is private: set "
                                "HF_TOKEN); check the name, or give a local config.json") from None
    except LocalEntryNotFoundError:  # the Hub stopped answering (it subclasses EntryNotFoundError)
        raise ConnectionError(offline) from None
    except EntryNotFoundError:
        raise FileNotFoundError(f"{repo_id} has no config.json (GGUF repositories usually have none); "
                                "use --gguf or --model with the repo:quant instead") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"the config.json of {repo_id} is not valid JSON ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - connection errors come in many classes, by HTTP library
        raise ConnectionError(f"could not fetch config.json of {repo_id} from the Hugging Face Hub "
                              f"({exc.__class__.__name__}); offline? give a local config.json, or --model "
                              "with a known config such as Qwen3-8B") from None


def from_gguf_metadata(kv: dict[str, Any], tensor_names: list[str], name: str = "") -> ModelShape:
    """Shape from a GGUF header's key/values and tensor names (see :mod:`helpers.gguf_header`)."""
    arch = kv.get("general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"GGUF architecture {arch!r} is not supported; supported: {', '.join(SUPPORTED_ARCHS)}")

    def key(suffix: str, default: Any = None) -> Any:
        return kv.get(f"{arch}.{suffix}", default)

    required = ["embedding_length", "attention.head_count", "block_count", "feed_forward_length"]
    if kv.get("tokenizer.ggml.tokens") is None:
        required.append("vocab_size")
    missing = [f"{arch}.{k}" for k in required if key(k) is None]
    if missing:
        raise ValueError(f"the GGUF header{f' of {name}' if name else ''} lacks {', '.join(missing)}; "
                         "it is not a complete model file (reconvert it with convert_hf_to_gguf.py)")
    n_embd = int(key("embedding_length"))
    n_head = int(key("attention.head_count"))
    tokens = kv.get("tokenizer.ggml.tokens")
    n_vocab = len(tokens) if tokens is not None else int(key("vocab_size"))
    return ModelShape(
        arch=arch,
        n_layer=int(key("block_count")),
        n_embd=n_embd,
        n_ff=int(key("feed_forward_length")),
        n_head=n_head,
        n_head_kv=int(key("attention.head_count_kv", n_head)),
        head_dim=int(key("attention.key_length", n_embd // n_head)),
        n_vocab=n_vocab,
        tied="output.weight" not in tensor_names,
        rope_freqs="rope_freqs.weight" in tensor_names,
        n_ctx_train=int(key("context_length", 0)),
        name=name or str(kv.get("general.name", "")),
    )


def _cfg(model_type: str, hidden: int, ff: int, layers: int, heads: int, kv: int, vocab: int, tied: bool,
         ctx: int, head_dim: int | None = None, rope: str | None = None) -> dict[str, Any]:
    cfg = {"model_type": model_type, "hidden_size": hidden, "intermediate_size": ff, "num_hidden_layers": layers,
           "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab,
           "tie_word_embeddings": tied, "max_position_embeddings": ctx}
    if head_dim:
        cfg["head_dim"] = head_dim
    if rope:
        cfg["rope_scaling"] = {"rope_type": rope}
    return cfg


#: The fields of a few public ``config.json`` files that the calculators need, so the
#: notebooks work offline. Values as published on the Hugging Face Hub.
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen3-0.6B": _cfg("qwen3", 1024, 3072, 28, 16, 8, 151936, True, 40960, 128),
    "Qwen3-1.7B": _cfg("qwen3", 2048, 6144, 28, 16, 8, 151936, True, 40960, 128),
    "Qwen3-4B": _cfg("qwen3", 2560, 9728, 36, 32, 8, 151936, True, 40960, 128),
    "Qwen3-8B": _cfg("qwen3", 4096, 12288, 36, 32, 8, 151936, False, 40960, 128),
    "Qwen3-14B": _cfg("qwen3", 5120, 17408, 40, 40, 8, 151936, False, 40960, 128),
    "Qwen3-32B": _cfg("qwen3", 5120, 25600, 64, 64, 8, 151936, False, 40960, 128),
    "Qwen2.5-7B-Instruct": _cfg("qwen2", 3584, 18944, 28, 28, 4, 152064, False, 32768),
    "DeepSeek-R1-Distill-Qwen-7B": _cfg("qwen2", 3584, 18944, 28, 28, 4, 152064, False, 131072),
    "Llama-3.2-1B": _cfg("llama", 2048, 8192, 16, 32, 8, 128256, True, 131072, 64, "llama3"),
    "Llama-3.1-8B": _cfg("llama", 4096, 14336, 32, 32, 8, 128256, False, 131072, None, "llama3"),
    "Llama-3.1-70B": _cfg("llama", 8192, 28672, 80, 64, 8, 128256, False, 131072, None, "llama3"),
    "Mistral-7B-v0.1": _cfg("mistral", 4096, 14336, 32, 32, 8, 32000, False, 32768),
}


def known_config_name(name: str) -> str | None:
    """The :data:`KNOWN_CONFIGS` key ``name`` means, in any case (``qwen3-8b`` -> ``Qwen3-8B``), or None."""
    wanted = str(name).strip().lower()
    return next((k for k in KNOWN_CONFIGS if k.lower() == wanted), None)


def known_shape(name: str) -> ModelShape:
    """Shape of one of :data:`KNOWN_CONFIGS` (offline; the name in any case)."""
    key = known_config_name(name)
    if key is None:
        raise ValueError(f"unknown model {name!r}; known offline: {', '.join(KNOWN_CONFIGS)}")
    return from_hf_config(KNOWN_CONFIGS[key], name=key)


def parameter_groups(shape: ModelShape) -> dict[str, int]:
    """Where the parameters are: embeddings, attention, feed-forward, norms, output matrix."""
    groups = {"token embeddings": 0, "attention (q, k, v, o)": 0, "feed-forward (gate, up, down)": 0,
              "norms and biases": 0, "output matrix": 0}
    for name, dims in shape.tensors():
        n = 1
        for d in dims:
            n *= d
        if name == "token_embd.weight":
            key = "token embeddings"
        elif name == "output.weight":
            key = "output matrix"
        elif len(dims) == 1:
            key = "norms and biases"
        elif ".attn_" in name:
            key = "attention (q, k, v, o)"
        else:
            key = "feed-forward (gate, up, down)"
        groups[key] += n
    return groups
