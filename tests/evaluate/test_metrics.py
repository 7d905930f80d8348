"""Metric values against hand-computed cases and each library's own documented examples, through corral."""

from __future__ import annotations

import pytest

from corral.errors import InvalidInputError
from corral.evaluate import metrics as m
from corral.evaluate.outcome import Outcome


def _outcomes(pairs, **fields):
    return [
        Outcome(i, {"messages": []}, ref, prediction=pred, **fields) for i, (pred, ref) in enumerate(pairs)
    ]


def _value(name, outcomes, config=None):
    metric = m.METRICS[name]
    values = [v for v in m.observe(metric, outcomes, config or {}) if v is not None]
    return metric.aggregate(values)


def test_exact_match_normalisation_is_nfkc_trimmed_whitespace_collapsed_case_kept():
    assert m.normalize("  Ｈello\u00a0 \n world ") == "Hello world"
    outcomes = _outcomes([("Yes.", " Yes. "), ("yes.", "Yes."), ("a  b", "a b"), ("no", "yes")])
    assert [m.METRICS["exact_match"].observe(o, {}) for o in outcomes] == [1.0, 0.0, 1.0, 0.0]
    assert _value("exact_match", outcomes) == 0.5


def test_failed_requests_are_not_scored_but_count_in_error_rate_and_latency():
    outcomes = _outcomes([("a", "a")], latency_ms=10.0) + [
        Outcome(1, {}, "b", error="HTTP 500", latency_ms=30.0)
    ]
    assert m.observe(m.METRICS["exact_match"], outcomes, {}) == [1.0, None]
    assert _value("error_rate", outcomes) == 0.5
    assert _value("latency_p50", outcomes) == 20.0


def test_sacrebleu_documented_corpus_example():
    """sacrebleu's README: BLEU 48.53 and chrF2 59.73 on its three sentences and two reference streams."""
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    refs = [
        ("The dog bit the man.", "The dog had bit the man."),
        ("It was not unexpected.", "No one was surprised."),
        ("The man bit him first.", "The man had bitten the dog."),
    ]
    pairs = list(zip(hyps, refs, strict=True))
    assert m.METRICS["bleu"].aggregate(pairs) == pytest.approx(48.53, abs=0.005)
    assert m.METRICS["chrf"].aggregate(pairs) == pytest.approx(59.73, abs=0.005)


def test_ter_hand_computed_edits_per_reference_word():
    # one substitution in four reference words; one deletion plus one insertion in four
    assert _value("ter", _outcomes([("a b c d", "a b c e")])) == pytest.approx(25.0)
    assert _value("ter", _outcomes([("a b c", "a b c d"), ("a b c d", "a b c d")])) == pytest.approx(100 / 8)


def test_bleu_hand_computed_identity_and_disjoint():
    same = _outcomes([("the cat sat on the mat", "the cat sat on the mat")])
    assert _value("bleu", same) == pytest.approx(100.0)
    assert _value("sentence_bleu", same) == pytest.approx(100.0)
    assert _value("bleu", _outcomes([("xyz qqq", "the cat sat on the mat")])) == pytest.approx(0.0)


def test_rouge_score_documented_example():
    """rouge-score's README pair; hand count: 6 shared unigrams of 8 and 9 (stemmed), LCS of 5."""
    outcomes = _outcomes(
        [("The quick brown dog jumps on the log.", "The quick brown fox jumps over the lazy dog")]
    )
    assert _value("rouge1", outcomes) == pytest.approx(2 * (6 / 8) * (6 / 9) / (6 / 8 + 6 / 9))
    assert _value("rougeL", outcomes) == pytest.approx(2 * (5 / 8) * (5 / 9) / (5 / 8 + 5 / 9))
    assert _value("rouge1", outcomes) == pytest.approx(0.70588, abs=1e-5)


def test_scikit_learn_documented_f1_precision_recall_example():
    """scikit-learn's f1_score docs: y_true [0,1,2,0,1,2], y_pred [0,2,1,0,0,1]."""
    outcomes = _outcomes(
        list(zip(["0", "2", "1", "0", "0", "1"], ["0", "1", "2", "0", "1", "2"], strict=True))
    )
    assert _value("f1_macro", outcomes) == pytest.approx(0.26666, abs=1e-4)
    assert _value("f1_micro", outcomes) == pytest.approx(1 / 3)
    assert _value("precision_macro", outcomes) == pytest.approx(0.22222, abs=1e-4)
    assert _value("recall_macro", outcomes) == pytest.approx(1 / 3)
    assert _value("accuracy", outcomes) == pytest.approx(2 / 6)


def test_jsonschema_documented_example_and_json_validity():
    """jsonschema's docs: {"name": "Eggs", "price": 34.99} is valid, a string price is not."""
    schema = {"type": "object", "properties": {"price": {"type": "number"}, "name": {"type": "string"}}}
    outcomes = _outcomes(
        [
            ('{"name": "Eggs", "price": 34.99}', None),
            ('{"name": "Eggs", "price": "Invalid"}', None),
            ("not json", None),
        ]
    )
    assert m.observe(m.METRICS["json_schema"], outcomes, {"json_schema": schema}) == [1.0, 0.0, 0.0]
    assert m.observe(m.METRICS["json_valid"], outcomes, {}) == [1.0, 1.0, 0.0]


def test_latency_percentiles_ttft_tokens_and_cost():
    outcomes = [
        Outcome(
            i,
            {},
            "r",
            prediction="r",
            latency_ms=float(i + 1) * 10,
            ttft_ms=float(i + 1),
            completion_tokens=i,
            cost_usd=0.5,
        )
        for i in range(20)
    ]
    assert _value("latency_p50", outcomes) == pytest.approx(105.0)
    assert _value("latency_p95", outcomes) == pytest.approx(190.5)
    assert _value("ttft_p50", outcomes) == pytest.approx(10.5)
    assert _value("completion_tokens", outcomes) == pytest.approx(9.5)
    assert _value("cost", outcomes) == pytest.approx(0.5)


def test_names_expand_groups_and_an_unknown_name_lists_the_valid_ones():
    assert [x.name for x in m.resolve(["rouge", "exact_match"])] == [
        "rouge1",
        "rouge2",
        "rougeL",
        "exact_match",
    ]
    with pytest.raises(InvalidInputError, match="unknown metric 'exactmatch'") as info:
        m.resolve(["exactmatch"])
    assert "exact_match" in str(info.value) and "bleu" in str(info.value)
