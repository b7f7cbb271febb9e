"""A tiny, real byte-level BPE tokenizer for the synthetic models.

Qwen3's own vocabulary has 151,936 entries; embedding it at a toy width would make the
"small" synthetic model ~150 MB of mostly embeddings. Instead we *train* a few hundred BPE
merges on a short English text that ships with this module. The result has the same
structure as Qwen's tokenizer (GPT-2 byte-level alphabet, ``gpt2`` model, ``qwen2``
pre-tokenizer, ChatML special tokens), so llama.cpp tokenizes and detokenizes with its real
code path — only the vocabulary is smaller.

Training is deterministic (ties are broken by the pair itself), so the same corpus always
gives byte-identical GGUF files.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

# Our own text, written for this course. Its words become the learned merges, so the
# gibberish a random model produces is built from recognisable English fragments.
CORPUS = """
A language model reads text as a sequence of tokens and predicts the next one. Serving such a
model means keeping its weights in fast memory and streaming them through the processor for
every token it generates. That is why memory, not arithmetic, usually sets the speed limit.
The course runs llama.cpp, a compact inference engine written in C and C++, on a graphics card
rented by the second from Modal. We start from the arithmetic of memory: how many bytes each
parameter needs in full precision, in half precision and after quantization. Then we choose a
quantization that keeps quality while fitting the card, download the model file, and run it.
A server keeps the model loaded between requests, answers through an interface that the
OpenAI client understands, and lets many users share one card by batching their requests.
Every number in these notebooks is computed, measured and checked, so that a learner can trust
what the page says and reproduce it on their own account or on their own laptop.
When there is no network and no graphics card, the same code runs on the processor with a small
synthetic model. Its weights are random, so its answers are nonsense, but the engine, the
server, the client and the measurements are all real, and that is what we want to learn.
"""

#: ChatML markers and Qwen3's reasoning tags, in the order Qwen3 lists its added tokens.
SPECIAL_TOKENS: tuple[tuple[str, str], ...] = (
    ("<|endoftext|>", "control"),
    ("<|im_start|>", "control"),
    ("<|im_end|>", "control"),
    ("<tool_call>", "user"),
    ("</tool_call>", "user"),
    ("<think>", "user"),
    ("</think>", "user"),
)

# A simplified version of the split that GPT-2-style tokenizers apply before BPE: words keep
# their leading space, digits and punctuation form their own pieces.
_PRETOKENIZE = re.compile(r" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+")


def byte_alphabet() -> dict[int, str]:
    """Map each of the 256 byte values to a printable character.

    Byte-level BPE needs every byte to be a visible, non-whitespace character so that
    tokens can be stored as ordinary strings. Printable Latin-1 bytes stand for themselves;
    the others are shifted to code points from 256 upwards. This is the convention GPT-2
    introduced and Qwen uses, and llama.cpp's ``gpt2`` tokenizer decodes it.
    """
    keep = list(range(ord("!"), ord("~") + 1))
    keep += list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    mapping: dict[int, str] = {b: chr(b) for b in keep}
    shift = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shift)
            shift += 1
    return mapping


@dataclass(frozen=True)
class BpeVocabulary:
    """Tokens (in byte-alphabet spelling), their merge rules, and which ids are special."""

    tokens: tuple[str, ...]
    merges: tuple[str, ...]
    special: dict[str, str]  # token text -> "control" | "user"

    def token_id(self, text: str) -> int:
        return self.tokens.index(text)

    def printable_ids(self) -> list[int]:
        """Ids of ordinary tokens that decode to printable ASCII (no control bytes)."""
        inverse = {c: b for b, c in byte_alphabet().items()}
        out = []
        for i, tok in enumerate(self.tokens):
            if tok in self.special:
                continue
            raw = bytes(inverse[c] for c in tok)
            if all(0x20 <= b < 0x7F for b in raw):
                out.append(i)
        return out


def train_bpe(corpus: str = CORPUS, n_merges: int = 400) -> BpeVocabulary:
    """Learn ``n_merges`` merges from ``corpus`` with the classic greedy BPE loop.

    At each step the most frequent adjacent pair of symbols (inside pre-tokenized words) is
    fused into a new symbol. Ties go to the lexicographically smallest pair so the result
    never depends on dict ordering.
    """
    alphabet = byte_alphabet()
    words = Counter(
        tuple(alphabet[b] for b in piece.encode("utf-8"))
        for piece in _PRETOKENIZE.findall(corpus)
    )
    vocab = [alphabet[b] for b in range(256)]
    merges: list[str] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for a, b in zip(word, word[1:], strict=False):
                pairs[(a, b)] += count
        if not pairs:
            break
        best_count = max(pairs.values())
        if best_count < 2:
            break
        best = min(p for p, c in pairs.items() if c == best_count)
        merged = best[0] + best[1]
        merges.append(f"{best[0]} {best[1]}")
        vocab.append(merged)
        words = Counter({_apply_merge(w, best, merged): c for w, c in words.items()})
    specials = {text: kind for text, kind in SPECIAL_TOKENS}
    return BpeVocabulary(tuple(vocab) + tuple(specials), tuple(merges), specials)


def _apply_merge(word: tuple[str, ...], pair: tuple[str, str], merged: str) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)
