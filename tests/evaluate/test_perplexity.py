"""Perplexity from one forward pass of a local model: a model with uniform next-token odds has the
vocabulary size as its perplexity (hand-computed: exp(ln V))."""

from __future__ import annotations

import pytest

from corral.evaluate.metrics import METRICS
from corral.evaluate.outcome import Outcome
from corral.evaluate.perplexity import score_perplexity

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_a_uniform_model_has_the_vocabulary_size_as_perplexity(tmp_path):
    from corral.testing import make_tiny_model

    path = make_tiny_model(tmp_path / "tiny")
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: uniform odds over the vocabulary
    model.save_pretrained(path)
    vocab = model.config.vocab_size
    outcomes = [
        Outcome(0, {"messages": [{"role": "user", "content": "hello"}]}, "def add(a, b): return a + b"),
        Outcome(1, {"prompt": "x ="}, "1"),
        Outcome(2, {"prompt": "skipped"}, None),
    ]
    score_perplexity(path, outcomes)
    assert outcomes[0].scores["perplexity"] == pytest.approx(torch.log(torch.tensor(float(vocab))).item())
    assert "perplexity" not in outcomes[2].scores
    metric = METRICS["perplexity"]
    values = [o.scores.get("perplexity") for o in outcomes if o.scores.get("perplexity") is not None]
    assert metric.aggregate(values) == pytest.approx(vocab, rel=1e-4)
