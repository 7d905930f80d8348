"""The checks models' aliases have hold for prompts too, and datasets refuse aliases the same way."""

from __future__ import annotations

import pytest

from corral.errors import InvalidInputError, NotFoundError


def _two_prompts(registry):  # type: ignore[no-untyped-def]
    registry.prompts.register("support", {"text": "Hi {{ user }}."})
    registry.prompts.register("support", {"text": "Hello {{ user }}."})
    registry.prompts.register("billing", {"text": "Pay {{ user }}."})


def test_prompt_alias_cannot_point_at_another_prompts_version(registry):
    _two_prompts(registry)
    with pytest.raises(
        InvalidInputError, match="alias of prompt 'support' cannot point at a version of 'billing'"
    ):
        registry.prompts.set_alias("support", "production", "billing@1")
    assert registry.prompts.alias_history("support") == []


def test_prompt_alias_checks_the_alias_name_and_the_version(registry):
    _two_prompts(registry)
    with pytest.raises(InvalidInputError, match="invalid alias 'latest'"):
        registry.prompts.set_alias("support", "latest", 1)
    with pytest.raises(NotFoundError, match=r"prompt 'support' has no version 7 \(latest is 2\)"):
        registry.prompts.set_alias("support", "production", 7)
    registry.prompts.set_alias("support", "staging", 2)
    assert registry.prompts.set_alias("support", "production", "support@staging").version == 2


def test_unknown_prompt_alias_names_the_aliases_there_are(registry):
    _two_prompts(registry)
    registry.prompts.set_alias("support", "production", 1)
    with pytest.raises(NotFoundError, match=r"has no alias 'canary' \(aliases: production\)"):
        registry.prompts.get("support@canary")


def test_prompt_alias_can_be_removed_like_a_model_alias(registry):
    _two_prompts(registry)
    registry.prompts.set_alias("support", "production", 1)
    registry.prompts.remove_alias("support", "production", reason="done")
    with pytest.raises(NotFoundError, match="has no alias 'production'"):
        registry.prompts.get("support@production")
    with pytest.raises(NotFoundError, match="has no alias 'production'"):
        registry.prompts.remove_alias("support", "production")
    assert [e.to_version for e in registry.prompts.alias_history("support")] == [1, None]


def test_datasets_refuse_aliases_with_one_message(registry):
    registry.datasets.register("faq", [{"prompt": "a", "completion": "b"}])
    with pytest.raises(InvalidInputError, match="datasets have no aliases"):
        registry.datasets.get("faq@production")
    with pytest.raises(InvalidInputError, match="datasets have no aliases"):
        registry.datasets.set_alias("faq", "production", 1)
    with pytest.raises(NotFoundError, match=r"dataset 'faq' has no version 4 \(latest is 1\)"):
        registry.datasets.get("faq@4")
