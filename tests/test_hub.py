"""GGUF file selection on realistic Hub file lists (offline)."""

from __future__ import annotations

import pytest

from helpers.errors import QuantNotFoundError
from helpers.hub import available_quants, parse_repo_id, quant_label, select_gguf_files

QWEN3_8B_GGUF = [  # the layout of Qwen/Qwen3-8B-GGUF
    ".gitattributes", "LICENSE", "README.md", "params",
    "Qwen3-8B-Q4_K_M.gguf", "Qwen3-8B-Q5_0.gguf", "Qwen3-8B-Q5_K_M.gguf",
    "Qwen3-8B-Q6_K.gguf", "Qwen3-8B-Q8_0.gguf",
]
COMMUNITY = [  # a community repo: many quants, a split BF16 in a folder, a vision projector
    "README.md", "mmproj-F16.gguf",
    "Model-32B-Q4_K.gguf", "Model-32B-Q4_K_M.gguf", "Model-32B-Q4_K_S.gguf", "Model-32B-IQ4_XS.gguf",
    "Model-32B-UD-Q4_K_XL.gguf", "Model-32B-q8_0.gguf",
    "BF16/Model-32B-BF16-00001-of-00003.gguf", "BF16/Model-32B-BF16-00003-of-00003.gguf",
    "BF16/Model-32B-BF16-00002-of-00003.gguf",
]


def test_single_file_quant():
    assert select_gguf_files(QWEN3_8B_GGUF, "Q5_K_M") == ["Qwen3-8B-Q5_K_M.gguf"]


def test_case_insensitive():
    assert select_gguf_files(QWEN3_8B_GGUF, "q5_k_m") == ["Qwen3-8B-Q5_K_M.gguf"]
    assert select_gguf_files(COMMUNITY, "Q8_0") == ["Model-32B-q8_0.gguf"]


def test_whole_word_match():
    assert select_gguf_files(COMMUNITY, "Q4_K") == ["Model-32B-Q4_K.gguf"]
    assert select_gguf_files(COMMUNITY, "Q4_K_S") == ["Model-32B-Q4_K_S.gguf"]
    assert select_gguf_files(QWEN3_8B_GGUF, "Q5_0") == ["Qwen3-8B-Q5_0.gguf"]


def test_split_files_in_order():
    assert select_gguf_files(COMMUNITY, "bf16") == [
        "BF16/Model-32B-BF16-00001-of-00003.gguf",
        "BF16/Model-32B-BF16-00002-of-00003.gguf",
        "BF16/Model-32B-BF16-00003-of-00003.gguf",
    ]


def test_missing_split_part():
    files = [f for f in COMMUNITY if "00002" not in f]
    with pytest.raises(QuantNotFoundError, match=r"missing part\(s\) \[2\] of 3"):
        select_gguf_files(files, "BF16")


def test_unknown_quant_lists_what_exists():
    with pytest.raises(QuantNotFoundError) as err:
        select_gguf_files(QWEN3_8B_GGUF, "Q3_K_L")
    assert "Available: Q4_K_M, Q5_0, Q5_K_M, Q6_K, Q8_0." in str(err.value)
    assert isinstance(err.value, ValueError)


def test_projector_is_not_a_quant():
    assert "F16" not in available_quants(COMMUNITY)
    with pytest.raises(QuantNotFoundError):
        select_gguf_files(COMMUNITY, "F16")


def test_available_quants_and_labels():
    assert available_quants(COMMUNITY) == ["BF16", "IQ4_XS", "Q4_K", "Q4_K_M", "Q4_K_S", "Q4_K_XL", "Q8_0"]
    assert quant_label("BF16/Model-32B-BF16-00001-of-00003.gguf") == "BF16"
    assert quant_label("README.md") is None


def test_repo_without_gguf():
    with pytest.raises(QuantNotFoundError, match="no GGUF files at all"):
        select_gguf_files(["README.md", "model.safetensors"], "Q5_K_M")


@pytest.mark.parametrize("bad", ["Qwen3-8B-GGUF", "", "a/b/c", "/name", "org/"])
def test_repo_id_needs_org_and_name(bad):
    with pytest.raises(ValueError, match="org/name"):
        parse_repo_id(bad)


def test_repo_id_ok():
    assert parse_repo_id("Qwen/Qwen3-8B-GGUF") == ("Qwen", "Qwen3-8B-GGUF")
