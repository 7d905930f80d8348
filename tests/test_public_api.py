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


def test_core_import_does_not_pull_torch():
    import subprocess
    import sys

    code = "import sys, corral, corral.registry, corral.cli.main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
