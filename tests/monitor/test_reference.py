"""Drift against a dataset version (or the one a model trained on) instead of an earlier window."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from corral.config import MonitorSettings, Settings
from corral.errors import InvalidInputError
from corral.monitor.reference import resolve, row_texts
from corral.monitor.service import MonitorService
from corral.monitor.windows import drift_report, latest_reports
from corral.store.models import DeploymentRow
from corral.testing.traffic import insert_traces, trace_row

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
TOPICS = ["my order", "a refund", "my password", "the invoice", "my address", "a parcel"]


def _question(rng: random.Random, longer: bool = False) -> str:
    text = f"Can you help with {rng.choice(TOPICS)} number {rng.randint(1, 999)}?"
    return text + " I have tried everything I could think of and it still does not work." * 4 if longer else text


def _answer(rng: random.Random) -> str:
    return f"Sure, I looked at {rng.choice(TOPICS)} and it is sorted now."


def test_a_dataset_row_reads_as_a_trace_of_it_would():
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello!"}]}  # fmt: skip
    assert row_texts(chat) == ("Be brief.\nHi", "Hello!")
    assert row_texts({"prompt": "2+2=", "completion": "4"}) == ("2+2=", "4")
    assert row_texts({"text": "great service", "label": "positive"}) == ("great service", None)
    assert row_texts({"messages": [{"role": "user", "content": "Hi"}]}) == ("Hi", None)


@pytest.fixture
def seeded(store, registry):  # type: ignore[no-untyped-def]
    rng = random.Random(5)
    rows = [{"messages": [{"role": "user", "content": _question(rng)}, {"role": "assistant", "content": _answer(rng)}]}
            for _ in range(600)]  # fmt: skip
    dataset = registry.datasets.register("faq", rows)
    same = [trace_row(f"a{i:031x}", NOW - timedelta(hours=20, minutes=i), "same", prompt=_question(rng),
                      answer=_answer(rng)) for i in range(300)]  # fmt: skip
    longer = [trace_row(f"b{i:031x}", NOW - timedelta(hours=20, minutes=i), "longer",
                        prompt=_question(rng, longer=True), answer=_answer(rng)) for i in range(300)]  # fmt: skip
    insert_traces(store, same + longer)
    return dataset


def test_longer_prompts_than_the_dataset_drift_and_the_same_prompts_do_not(store, registry, seeded):
    current = (NOW - timedelta(hours=24), NOW)
    same = drift_report(store, "same", "faq@1", current, registry=registry, use_text=False)
    assert same["reference"] == ["dataset faq@1 (train split)"] and same["reference_dataset"] == "faq@1"
    assert {f["feature"] for f in same["features"]} == {"prompt_chars", "output_chars"}  # what a row has
    assert not same["drifted"], same["features"]
    longer = drift_report(store, "longer", "faq", current, registry=registry, use_text=False, split="train")
    assert longer["drifted"] and longer["drifted_features"] == ["prompt_chars"]


def test_trained_on_names_the_dataset_in_a_model_versions_lineage(registry, seeded):
    registry.models.register("bot", endpoint="http://127.0.0.1:9/v1", upstream_model="m", lineage={"dataset": "faq@1"})
    registry.models.register("plain", endpoint="http://127.0.0.1:9/v1", upstream_model="m")
    assert resolve(registry, "trained-on:bot@1") == "faq@1"
    with pytest.raises(InvalidInputError, match="records no training dataset"):
        resolve(registry, "trained-on:plain")
    with pytest.raises(InvalidInputError, match="no rows in split"):
        drift_report(registry.store, "same", "faq@1", (NOW - timedelta(hours=1), NOW), registry=registry,
                     split="nope", use_text=False, save=False)  # fmt: skip


def test_the_monitor_loop_uses_the_configured_dataset_reference(store, registry, seeded, monkeypatch):
    monkeypatch.setattr("corral.monitor.windows.embedder", lambda: None)  # numbers only: this is about the reference
    with store.session() as session:
        session.add_all([DeploymentRow(name=n, spec={"routes": []}, updated_by="t") for n in ("same", "longer")])
    settings = MonitorSettings.model_validate({"drift_reference_datasets": {"longer": "faq@1"}})
    assert MonitorService(store, settings, registry=registry).drift_due(NOW) == 2
    reports = {r["deployment"]: r for r in latest_reports(store)}
    assert reports["longer"]["reference_dataset"] == "faq@1"
    assert "reference_dataset" not in reports["same"]  # the window before, as without the setting


def test_a_bad_reference_in_config_names_the_deployment():
    with pytest.raises(ValueError, match="support: 'faq@0'"):
        Settings.model_validate({"monitor": {"drift_reference_datasets": {"support": "faq@0"}}})
