"""Model registry behaviour, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from corral.errors import ConflictError, InvalidInputError, NotFoundError


def test_versions_are_numbered_per_model_and_immutable(registry, model_dir):
    v1 = registry.models.register("support", model_dir("a"), tags={"team": "cx"})
    v2 = registry.models.register("support", model_dir("b"))
    other = registry.models.register("billing", model_dir("c"))
    assert (v1.version, v2.version, other.version) == (1, 2, 1)
    assert v1.ref == "support@1" and v1.kind == "weights" and v1.tags == {"team": "cx"}
    assert v1.artifact != v2.artifact
    assert registry.models.resolve("support@1").artifact == v1.artifact
    assert v1.created_by == "tester"


def test_bare_name_resolves_to_latest_live_version(registry, model_dir):
    registry.models.register("support", model_dir("a"))
    registry.models.register("support", model_dir("b"))
    assert registry.models.resolve("support").version == 2
    assert registry.models.resolve("support@latest").version == 2
    registry.models.retire("support@2")
    assert registry.models.resolve("support").version == 1


def test_unknown_references_name_what_exists(registry, model_dir):
    registry.models.register("support", model_dir("a"))
    with pytest.raises(NotFoundError, match=r"model 'support' has no version 9 \(latest is 1\)"):
        registry.models.resolve("support@9")
    with pytest.raises(NotFoundError, match="has no alias 'production'"):
        registry.models.resolve("support@production")
    with pytest.raises(NotFoundError, match="model 'nope' does not exist"):
        registry.models.resolve("nope@1")
    with pytest.raises(InvalidInputError):
        registry.models.resolve("bad name@1")


def test_stage_is_derived_from_aliases_and_lifecycle(registry, model_dir):
    registry.models.register("support", model_dir("a"))
    registry.models.register("support", model_dir("b"))
    registry.models.register("support", model_dir("c"))
    registry.models.set_alias("support", "production", 1)
    registry.models.set_alias("support", "staging", "2")
    stages = {v.version: v.stage for v in registry.models.versions("support")}
    assert stages == {1: "production", 2: "staging", 3: "registered"}
    registry.models.set_alias("support", "production", "support@2")
    stages = {v.version: v.stage for v in registry.models.versions("support")}
    assert stages == {1: "registered", 2: "production", 3: "registered"}


def test_rollback_restores_previous_production_version(registry, model_dir):
    for marker in "abc":
        registry.models.register("support", model_dir(marker))
    registry.models.set_alias("support", "production", 1)
    registry.models.set_alias("support", "production", 2, reason="better")
    registry.models.set_alias("support", "production", 3)
    assert registry.models.rollback("support").version == 2
    assert registry.models.rollback("support").version == 1  # a second rollback goes one step further
    with pytest.raises(ConflictError, match="no earlier version"):
        registry.models.rollback("support")
    history = registry.models.alias_history("support", "production")
    assert [(e.from_version, e.to_version, e.is_rollback) for e in history] == [
        (None, 1, False),
        (1, 2, False),
        (2, 3, False),
        (3, 2, True),
        (2, 1, True),
    ]
    assert history[1].reason == "better" and history[1].actor == "tester"


def test_rollback_without_history_is_a_clear_error(registry, model_dir):
    registry.models.register("support", model_dir("a"))
    with pytest.raises(ConflictError, match="no alias 'production' to roll back"):
        registry.models.rollback("support")
    registry.models.set_alias("support", "production", 1)
    with pytest.raises(ConflictError, match="no earlier version"):
        registry.models.rollback("support")


def test_retiring_an_aliased_version_is_refused(registry, model_dir):
    registry.models.register("support", model_dir("a"))
    registry.models.set_alias("support", "production", 1)
    with pytest.raises(ConflictError, match="alias production points at it"):
        registry.models.retire("support@1")


def test_retire_drains_until_nothing_is_in_flight(registry, model_dir):
    registry.models.register("support", model_dir("a"))
    registry.models.register("support", model_dir("b"))
    in_flight = {"support@1": 2}
    registry.models.in_flight = lambda ref: in_flight.get(ref, 0)
    assert registry.models.retire("support@1").stage == "draining"
    with pytest.raises(ConflictError, match="is draining"):
        registry.models.set_alias("support", "production", 1)
    in_flight["support@1"] = 0
    done = registry.models.complete_retirement("support@1")
    assert done.stage == "retired" and done.retired_at is not None
    with pytest.raises(ConflictError, match="already retired"):
        registry.models.retire("support@1")


def test_retire_keeps_artifacts_unless_purged(registry, model_dir):
    registry.models.register("support", model_dir("a"))
    registry.models.register("support", model_dir("b"))
    kept = registry.models.retire("support@1")
    assert registry.artifacts.exists(kept.artifact)
    purged = registry.models.retire("support@2", purge=True)
    assert purged.artifact_purged and not registry.artifacts.exists(purged.artifact)
    with pytest.raises(NotFoundError, match="purge"):
        registry.models.materialize(purged)


def test_purge_keeps_blobs_shared_with_other_versions(registry, model_dir):
    same = model_dir("a")
    v1 = registry.models.register("support", same)
    v2 = registry.models.register("other", same)
    registry.models.retire("support@1", purge=True)
    assert registry.artifacts.exists(v2.artifact) and v1.artifact == v2.artifact
    assert (registry.models.materialize(v2) / "config.json").is_file()


def test_identical_files_answer_with_the_existing_live_version(registry, model_dir):
    v1 = registry.models.register("support", model_dir("a"))
    again = registry.models.register("support", model_dir("a"))
    assert (again.ref, again.created, v1.created) == ("support@1", False, True)
    assert [v.version for v in registry.models.versions("support")] == [1]
    registry.models.register("support", model_dir("b"))
    registry.models.retire("support@1")
    assert registry.models.register("support", model_dir("a")).ref == "support@3"  # retired: a new version


def _weights_dir(tmp_path, **files: str | bytes):  # type: ignore[no-untyped-def]
    path = tmp_path / "candidate"
    path.mkdir(exist_ok=True)
    for name, body in files.items():
        target = path / name.replace("__", ".")
        target.write_bytes(body) if isinstance(body, bytes) else target.write_text(body)
    return path


def test_a_model_directory_no_worker_could_load_is_refused(registry, tmp_path):
    from tests.conftest import TINY_TOKENIZER

    bad_config = _weights_dir(tmp_path, config__json="{not json")
    with pytest.raises(InvalidInputError, match="config.json is not valid JSON"):
        registry.models.register("m", bad_config)
    (bad_config / "config.json").write_text("{}")
    with pytest.raises(InvalidInputError, match="has no weights"):
        registry.models.register("m", bad_config)
    (bad_config / "model.safetensors").write_bytes(b"w" * 8)
    with pytest.raises(InvalidInputError, match="has no tokenizer") as info:
        registry.models.register("m", bad_config)
    assert "--no-tokenizer" in str(info.value)
    (bad_config / "tokenizer.json").write_text('{"model": "broken"}')
    with pytest.raises(InvalidInputError, match="tokenizer.json that does not load"):
        registry.models.register("m", bad_config)
    (bad_config / "tokenizer.json").write_text(TINY_TOKENIZER)
    assert registry.models.register("m", bad_config).warnings == []


def test_no_tokenizer_registers_with_a_warning_when_asked(registry, tmp_path):
    path = _weights_dir(tmp_path, config__json="{}", model__safetensors=b"w")
    version = registry.models.register("m", path, tokenizer_required=False)
    assert version.ref == "m@1" and "has no tokenizer" in version.warnings[0]


def test_adapter_and_endpoint_versions(registry, model_dir, tmp_path):
    registry.models.register("base", model_dir("a"))
    adapter_dir = tmp_path / "adapter"
    adapter_dir.mkdir()
    (adapter_dir / "adapter_config.json").write_text('{"r": 8}')
    with pytest.raises(InvalidInputError, match="has no weights"):
        registry.models.register("support", adapter_dir, base="base@1")
    (adapter_dir / "adapter_model.safetensors").write_bytes(b"lora")
    adapter = registry.models.register("support", adapter_dir, base="base@1", lineage={"dataset": "faq@1"})
    assert adapter.kind == "adapter" and adapter.base_ref == "base@1"
    assert adapter.lineage["dataset"] == "faq@1" and adapter.lineage["base"] == "base@1"
    remote = registry.models.register(
        "support", endpoint="http://127.0.0.1:9/v1", upstream_model="gpt-x", api_key_env="UPSTREAM_KEY"
    )
    assert (remote.kind, remote.endpoint_url, remote.upstream_model, remote.artifact) == (
        "endpoint",
        "http://127.0.0.1:9/v1",
        "gpt-x",
        None,
    )
    with pytest.raises(InvalidInputError, match="base support@1 is an adapter version"):
        registry.models.register("x", adapter_dir, base="support@1")


def test_register_rejects_bad_paths_and_arguments(registry, tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        registry.models.register("support", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="has no config.json"):
        registry.models.register("support", tmp_path / "empty")
    with pytest.raises(InvalidInputError, match="upstream-model"):
        registry.models.register("support", endpoint="http://x/v1")
    with pytest.raises(InvalidInputError, match="must start with http"):
        registry.models.register("support", endpoint="ftp://x", upstream_model="m")
    with pytest.raises(NotFoundError, match="model 'ghost' does not exist"):
        registry.models.register("support", tmp_path / "empty", base="ghost@1")


def test_metrics_are_added_never_overwritten(registry, model_dir):
    registry.models.register("support", model_dir("a"), metrics={"loss": 1.0})
    v = registry.models.add_metrics("support@1", {"exact_match": 0.97})
    assert v.metrics == {"loss": 1.0, "exact_match": 0.97}
    with pytest.raises(ConflictError, match="already has metrics loss"):
        registry.models.add_metrics("support@1", {"loss": 0.5})


def test_every_change_is_audited_with_actor_and_before_after(registry, model_dir):
    registry.models.register("support", model_dir("a"))
    registry.models.register("support", model_dir("b"))
    registry.models.set_alias("support", "production", 1)
    registry.as_actor("key:ci-bot").models.set_alias("support", "production", 2)
    entries = registry.audit.list(subject="model:support")
    actions = [e.action for e in reversed(entries)]
    assert actions == ["model.create", "version.register", "version.register", "alias.set", "alias.set"]
    latest = entries[0]
    assert latest.actor == "key:ci-bot" and latest.before == {"version": 1} and latest.after["version"] == 2
