from __future__ import annotations

from pathlib import Path

import pytest

from tiny_models import build_bert

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """Folder of a tiny random BertModel with its tokenizer."""
    return build_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_mlm(tmp_path_factory) -> Path:
    """Folder of a tiny random BertForMaskedLM with its tokenizer."""
    return build_bert(tmp_path_factory.mktemp("tiny-mlm"), masked_lm=True)


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test with a reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: data tests need the shared models and datasets beside the repo")
    return path
