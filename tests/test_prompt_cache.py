"""Prompt caching across the turns of a chat, measured by llama-server's own token counts."""

from __future__ import annotations

import pytest

from helpers import prompt_cache
from helpers.runtime import LocalServer

pytestmark = [pytest.mark.llama, pytest.mark.usefixtures("no_orphans")]


def _chat(extra: tuple[str, ...] = (), **kw) -> list[prompt_cache.Turn]:
    with LocalServer.for_model("smollm2", parallel=1, ctx_per_slot=4096, extra_args=extra) as server:
        return prompt_cache.conversation(server.base_url, 4, max_tokens=8, **kw)


def test_a_growing_chat_processes_only_the_new_turn():
    cached = _chat()
    assert cached[0].reused == 0 and cached[0].processed == cached[0].prompt_tokens
    for before, turn in zip(cached, cached[1:], strict=False):
        assert turn.prompt_tokens > before.prompt_tokens
        # only the new messages are computed: at most what was added since the last turn
        assert turn.reused >= before.prompt_tokens - 2 and turn.processed <= turn.prompt_tokens - before.prompt_tokens
    uncached = _chat(cache_prompt=False)
    assert all(t.reused == 0 and t.processed == t.prompt_tokens for t in uncached)


def test_cache_reuse_survives_a_sliding_window():
    plain = _chat(keep_turns=2)
    shifted = _chat(("--cache-reuse", "32"), keep_turns=2)
    # from turn 3 the oldest exchange is dropped: the prefix changes
    assert sum(t.processed for t in shifted[2:]) < 0.75 * sum(t.processed for t in plain[2:])
    assert [t.prompt_tokens for t in shifted] == [t.prompt_tokens for t in plain]
