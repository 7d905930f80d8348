"""The names users import from `corral` are pinned: changing them is a deliberate API change."""

import corral

PUBLIC = {
    "AliasEvent",
    "ArtifactIntegrityError",
    "ArtifactStore",
    "AuditEntry",
    "ConfigError",
    "ConflictError",
    "CorralError",
    "DatasetVersion",
    "InvalidInputError",
    "Model",
    "ModelVersion",
    "NotFoundError",
    "PromptVersion",
    "Registry",
    "Settings",
    "Store",
    "StoreUnavailableError",
    "load_settings",
    "open_registry",
    "parse_ref",
}
LAZY = {"LLMEngine", "SamplingParams", "train", "TrainSpec", "create_gateway"}


def test_public_names_are_pinned():
    assert set(corral.__all__) == PUBLIC
    assert set(corral._LAZY) == LAZY
    for name in PUBLIC:
        assert getattr(corral, name) is not None


def test_every_lazy_name_imports():
    """Each lazy entry point resolves to a real object (create_gateway once pointed at nothing)."""
    import importlib.util

    for name in sorted(LAZY):
        if corral._LAZY[name] != "corral.gateway" and importlib.util.find_spec("torch") is None:
            continue  # the engine and train extras are not installed here
        assert getattr(corral, name) is not None, name
    assert callable(corral.create_gateway)


def test_create_gateway_builds_an_asgi_app(tmp_path):
    from corral.config import Settings

    settings = Settings.model_validate({"store": {"database_url": f"sqlite:///{tmp_path / 'c.db'}"}})
    app = corral.create_gateway(settings)
    assert callable(app) and app.parts.settings is settings


def test_core_import_does_not_pull_torch():
    import subprocess
    import sys

    code = "import sys, corral, corral.registry, corral.cli.main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
