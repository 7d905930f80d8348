"""Datasets and prompt templates in the registry, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from corral.errors import InvalidInputError, NotFoundError

ROWS = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(40)]


def test_identical_content_answers_with_the_existing_version(registry):
    first = registry.datasets.register("faq", ROWS, lineage={"source": "faq.jsonl"})
    again = registry.datasets.register("faq", list(ROWS))
    assert first.created and not again.created and again.version == first.version == 1
    assert len(registry.datasets.versions("faq")) == 1


def test_dataset_version_records_kind_splits_and_lineage(registry):
    version = registry.datasets.register("faq", ROWS, tags={"owner": "cx"}, lineage={"source": "faq.jsonl"})
    assert version.schema_kind == "prompt_completion" and version.row_count == 40
    assert sum(version.splits.values()) == 40 and set(version.splits) <= {"train", "validation", "test"}
    assert version.lineage == {"source": "faq.jsonl"} and version.tags == {"owner": "cx"}
    rows = registry.datasets.rows("faq@1")
    assert all(r["split"] in {"train", "validation", "test"} for r in rows)
    assert len(registry.datasets.rows("faq", split="train")) == version.splits.get("train", 0)


def test_splits_are_deterministic_and_kept_when_given(registry):
    a = registry.datasets.register("a", ROWS)
    b = registry.datasets.register("b", ROWS)
    assert a.splits == b.splits
    pinned = [{**r, "split": "test"} for r in ROWS[:3]]
    assert registry.datasets.register("c", pinned).splits == {"test": 3}


def test_diff_shows_rows_added_and_removed(registry):
    registry.datasets.register("faq", ROWS[:30])
    registry.datasets.register("faq", ROWS[5:35])
    diff = registry.datasets.diff("faq@1", "faq@2")
    assert (diff.added, diff.removed, diff.unchanged) == (5, 5, 25)
    assert diff.added_rows[0]["prompt"] == "question 30"


def test_bad_rows_are_rejected_with_their_number(registry):
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "robot", "content": "x"}]},
    ]
    with pytest.raises(InvalidInputError, match="row 2: messages\\[0\\] needs a role"):
        registry.datasets.register("chat", rows)
    with pytest.raises(InvalidInputError, match="cannot tell the schema"):
        registry.datasets.register("odd", [{"foo": 1}])
    with pytest.raises(InvalidInputError, match="has no rows"):
        registry.datasets.register("none", [])
    with pytest.raises(NotFoundError, match="no version 7"):
        registry.datasets.get("faq@7") if registry.datasets.register("faq", ROWS) else None


def test_prompt_templates_render_and_name_missing_variables(registry):
    registry.prompts.register("greeting", {"text": "Hello {{ name }}, welcome to {{ shop }}."})
    assert (
        registry.prompts.render("greeting", {"name": "Ada", "shop": "corral"})
        == "Hello Ada, welcome to corral."
    )
    with pytest.raises(InvalidInputError, match="not given: name, shop"):
        registry.prompts.render("greeting@1", {})


def test_chat_prompt_templates_are_versioned_and_aliased(registry):
    registry.prompts.register(
        "support", {"messages": [{"role": "system", "content": "You help {{ user }}."}]}
    )
    registry.prompts.register(
        "support", {"messages": [{"role": "system", "content": "Be brief, {{ user }}."}]}
    )
    registry.prompts.set_alias("support", "production", 1)
    registry.prompts.set_alias("support", "production", 2)
    assert registry.prompts.get("support@production").version == 2
    assert registry.prompts.rollback("support").version == 1
    rendered = registry.prompts.render("support@production", {"user": "Bo"})
    assert rendered == [{"role": "system", "content": "You help Bo."}]


def test_prompt_sandbox_blocks_unsafe_templates(registry):
    registry.prompts.register("evil", {"text": "{{ ''.__class__.__mro__[1].__subclasses__() }}"})
    with pytest.raises(InvalidInputError, match="failed to render"):
        registry.prompts.render("evil", {})
    with pytest.raises(InvalidInputError, match="syntax error"):
        registry.prompts.register("broken", {"text": "{{ unclosed"})


def test_a_variable_named_self_is_passed_or_refused_clearly(registry):
    registry.prompts.register("me", {"text": "I am {{ name }}."})
    assert registry.prompts.render("me", {"name": "Ada", "self": "x"}) == "I am Ada."  # was a TypeError (500)
    with pytest.raises(InvalidInputError, match="uses self as a variable; Jinja reserves"):
        registry.prompts.register("mine", {"text": "I am {{ self }}."})


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(n) %}x{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{{ 'x' * 200000000 }}",
        "{{ 'x' * 1000 * 1000 * 1000 }}",
        "{{ 2 ** 100000000 }}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        "{% for i in range(90000) %}{{ 'abcdefghijklmnopqrstuvwxyz' }}{% endfor %}",
        "{{ 'x' | center(900000000) }}",
        "{{ '%900000000s' | format('x') }}",
        "{{ '%900000000s' % 'x' }}",
        "{{ '{:>900000000}'.format('x') }}",
        "{{ 'x'.ljust(900000000) }}",
    ],
)
def test_runaway_templates_are_bounded_and_a_clear_input_error(registry, source):
    registry.prompts.register("big", {"text": source})
    with pytest.raises(InvalidInputError, match=r"prompt big@1 "):
        registry.prompts.render("big", {"n": 10**12})


def test_template_type_errors_are_input_errors_not_crashes(registry):
    registry.prompts.register("bad", {"text": "{{ a + 1 }}{{ a.__class__ }}"})
    with pytest.raises(InvalidInputError, match="failed to render: TypeError"):
        registry.prompts.render("bad", {"a": "x"})
