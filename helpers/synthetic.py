"""Write small (or full-size) synthetic Qwen3 models as GGUF files.

The course must run on machines without access to the Hugging Face Hub, yet every part of it
— llama.cpp loading a model, quantizing it, serving it, the memory calculator — needs
a real GGUF file. A synthetic model is one: it has exactly the tensor names, shapes and
metadata that ``convert_hf_to_gguf.py`` writes for Qwen3, a real (small) BPE tokenizer and a
ChatML chat template, but *random weights*. So it speaks gibberish. That is fine for what we
use it for: speed and memory depend on shapes and types, never on the values of the weights,
and the engine, server and client code paths are exactly the ones a real model takes.

Two conveniences make the gibberish easier to live with:

* the output rows of special tokens, the end-of-sequence token and non-printable byte tokens
  are zero, so with llama.cpp's default top-k sampling the model emits readable ASCII
  fragments and never stops early — every request generates exactly ``n_predict`` tokens,
  which is what benchmarks want;
* the chat template opens a ``<think>`` block unless ``enable_thinking`` is false, as
  Qwen3's thinking templates do, so the server's reasoning parser has something to parse.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from helpers.config import models_dir
from helpers.model_shape import ModelShape
from helpers.tokenizer import BpeVocabulary, train_bpe

# Our ChatML template. Thinking is on by default: the generation prompt opens a <think>
# block; `enable_thinking=false` (chat_template_kwargs) closes it empty, as Qwen3 does.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' and message.get('reasoning_content') -%}"
    "{{- '<think>\\n' + message['reasoning_content'] + '\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{{- (message['content'] or '') + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and not enable_thinking -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- else -%}"
    "{{- '<think>\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)

_DTYPES = {"F32": (np.float32, 0), "F16": (np.float16, 1)}  # numpy type, general.file_type


@dataclass(frozen=True)
class SyntheticSpec:
    """The shape of a synthetic Qwen3 model (the fields of a Qwen3 ``config.json``)."""

    name: str = "tiny"
    n_layer: int = 4
    n_embd: int = 256
    n_ff: int = 768
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 64
    #: None: exactly the trained tokenizer; a number: pad the vocabulary to that size.
    n_vocab: int | None = None
    n_ctx_train: int = 40960
    rope_freq_base: float = 1_000_000.0
    rms_eps: float = 1e-6
    #: Tied embeddings: no ``output.weight``; llama.cpp reuses ``token_embd.weight``.
    tied: bool = False
    dtype: str = "F16"
    seed: int = 0
    n_merges: int = 400

    def __post_init__(self) -> None:
        if self.dtype.upper() not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, not {self.dtype!r}")
        for field in ("n_layer", "n_embd", "n_ff", "n_head", "n_head_kv", "head_dim"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")
        if self.n_head % self.n_head_kv:
            raise ValueError(f"n_head ({self.n_head}) must be a multiple of n_head_kv ({self.n_head_kv})")

    def key(self) -> str:
        """A short content hash: same spec, same file name, same bytes."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]

    def file_name(self) -> str:
        return f"synthetic-qwen3-{self.name}-{self.dtype.upper()}-{self.key()}.gguf"


#: Small enough to run anywhere in seconds (a few MB), big enough to exercise every tensor.
TINY = SyntheticSpec()
#: Exactly Qwen3-8B's shapes and vocabulary size (about 16.4 GB in F16): for GPU benchmarks.
QWEN3_8B = SyntheticSpec(
    name="8b", n_layer=36, n_embd=4096, n_ff=12288, n_head=32, n_head_kv=8, head_dim=128,
    n_vocab=151936,
)


def vocabulary(spec: SyntheticSpec) -> tuple[list[str], list[int], BpeVocabulary]:
    """Token strings and GGUF token types for ``spec``, padded to ``spec.n_vocab`` if set."""
    import gguf

    bpe = train_bpe(n_merges=spec.n_merges)
    tokens = list(bpe.tokens)
    kinds = {"control": gguf.TokenType.CONTROL, "user": gguf.TokenType.USER_DEFINED}
    types = [int(kinds[bpe.special[t]]) if t in bpe.special else int(gguf.TokenType.NORMAL) for t in tokens]
    if spec.n_vocab is not None:
        if spec.n_vocab < len(tokens):
            raise ValueError(f"n_vocab={spec.n_vocab} is smaller than the tokenizer ({len(tokens)} tokens)")
        # Same padding convention as convert_hf_to_gguf.py: unused placeholder tokens.
        for i in range(len(tokens), spec.n_vocab):
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
    return tokens, types, bpe


def model_shape(spec: SyntheticSpec, n_vocab: int | None = None) -> ModelShape:
    """The :class:`ModelShape` of a synthetic spec (the calculators' view of it)."""
    if n_vocab is None:
        n_vocab = len(vocabulary(spec)[0])
    return ModelShape(arch="qwen3", n_layer=spec.n_layer, n_embd=spec.n_embd, n_ff=spec.n_ff, n_head=spec.n_head,
                      n_head_kv=spec.n_head_kv, head_dim=spec.head_dim, n_vocab=n_vocab, tied=spec.tied,
                      n_ctx_train=spec.n_ctx_train, name=f"synthetic-{spec.name}")


def tensor_plan(spec: SyntheticSpec, n_vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, numpy shape) for every tensor, in the order convert_hf_to_gguf writes them.

    The list comes from :class:`helpers.model_shape.ModelShape`, the same one the memory
    calculator uses, so the files we write and the sizes we predict cannot disagree.
    Numpy shapes are (rows, columns) = (out, in); GGUF stores the reverse.
    """
    return model_shape(spec, n_vocab).tensors()


def _tensor_values(
    shape: tuple[int, ...], rng: np.random.Generator, dtype: type, silent_rows: np.ndarray | None
) -> np.ndarray:
    if len(shape) == 1:
        # Norm weights: ones, as a freshly initialised RMSNorm. Like convert_hf_to_gguf.py
        # we keep every 1-D tensor in F32 whatever the file type; ggml's CPU kernels
        # multiply F32 activations by F32 norms only.
        return np.ones(shape, dtype=np.float32)
    values = rng.standard_normal(shape, dtype=np.float32)
    values *= 1.0 / np.sqrt(shape[1])  # keep activations O(1) whatever the width
    if silent_rows is not None:
        # Zero logits for tokens the model should never pick (see the module docstring).
        values[silent_rows] = 0.0
    return values.astype(dtype, copy=False)


def write_synthetic_model(
    path: str | os.PathLike[str],
    spec: SyntheticSpec = TINY,
    progress: Callable[[Iterator], Iterator] | None = None,
) -> Path:
    """Write ``spec`` as a GGUF file at ``path`` (atomically: a temp file, then rename).

    Tensors are generated and written one at a time, so even the 16 GB Qwen3-8B shape
    needs only one tensor's worth of memory. ``progress`` may wrap the tensor iterator
    (e.g. ``tqdm``) for long writes.
    """
    import gguf

    path = Path(path)
    dtype, file_type = _DTYPES[spec.dtype.upper()]
    tokens, types, bpe = vocabulary(spec)
    n_vocab = len(tokens)
    allowed = np.zeros(n_vocab, dtype=bool)
    allowed[bpe.printable_ids()] = True
    silent = np.flatnonzero(~allowed)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN3])
    try:
        writer.add_name(f"Synthetic Qwen3 ({spec.name})")
        writer.add_description("Random weights, real Qwen3 layout; written by the llama.cpp-on-Modal course.")
        writer.add_context_length(spec.n_ctx_train)
        writer.add_embedding_length(spec.n_embd)
        writer.add_block_count(spec.n_layer)
        writer.add_feed_forward_length(spec.n_ff)
        writer.add_head_count(spec.n_head)
        writer.add_head_count_kv(spec.n_head_kv)
        writer.add_key_length(spec.head_dim)
        writer.add_value_length(spec.head_dim)
        writer.add_rope_freq_base(spec.rope_freq_base)
        writer.add_layer_norm_rms_eps(spec.rms_eps)
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("qwen2")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(list(bpe.merges))
        writer.add_eos_token_id(bpe.token_id("<|im_end|>"))
        writer.add_pad_token_id(bpe.token_id("<|endoftext|>"))
        writer.add_bos_token_id(bpe.token_id("<|endoftext|>"))
        writer.add_add_bos_token(False)
        writer.add_chat_template(CHAT_TEMPLATE)

        plan = tensor_plan(spec, n_vocab)
        for name, shape in plan:
            tensor_type = np.dtype(np.float32 if len(shape) == 1 else dtype)
            writer.add_tensor_info(name, shape, tensor_type, int(np.prod(shape)) * tensor_type.itemsize)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        items: Iterator = iter(plan)
        if progress is not None:
            items = progress(items)
        # The matrix that produces logits: output.weight, or the embedding when tied.
        logits_tensor = plan[-1][0] if not spec.tied else plan[0][0]
        for index, (name, shape) in enumerate(items):
            rng = np.random.default_rng([spec.seed, index])
            rows = silent if name == logits_tensor else None
            writer.write_tensor_data(_tensor_values(shape, rng, dtype, rows))
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return path


def synthetic_model(spec: SyntheticSpec = TINY, directory: str | os.PathLike[str] | None = None) -> Path:
    """Path to the synthetic model for ``spec``, writing it on first use.

    The file name carries a hash of the spec, so a cached file always matches its spec.
    """
    target = Path(directory) if directory is not None else models_dir()
    path = target / spec.file_name()
    if not path.exists():
        write_synthetic_model(path, spec)
    return path


def quantized_model(quant: str = "Q4_K_M", spec: SyntheticSpec = TINY,
                    directory: str | os.PathLike[str] | None = None) -> Path:
    """The synthetic model quantized with the real llama-quantize (written once, then cached)."""
    from helpers.quant import preset, quantize

    source = synthetic_model(spec, directory)
    path = source.with_name(source.name.replace(f"-{spec.dtype.upper()}-", f"-{preset(quant).name}-"))
    if not path.exists():
        quantize(str(source), str(path), quant)
    return path


def parameter_count(spec: SyntheticSpec) -> int:
    """Number of weights in a model of this shape (what "8B" counts)."""
    return model_shape(spec).parameter_count()
