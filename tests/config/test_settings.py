"""Settings load from corral.yaml and CORRAL_* variables and fail early, naming file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.config import load_settings, masked
from corral.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_use_sqlite_and_artifacts_under_corral_home():
    settings = load_settings(environ={"CORRAL_HOME": "/tmp/x"})
    assert settings.store.resolved_url().startswith("sqlite:///")
    assert settings.gateway.port == 8000 and settings.deployments == {}


def test_yaml_then_nested_variables_then_short_names(tmp_path):
    cfg = write(tmp_path / "c.yaml", "gateway:\n  port: 9000\nstore:\n  database_url: sqlite:///a.db\n")
    env = {"CORRAL_GATEWAY__HOST": "0.0.0.0", "CORRAL_DATABASE_URL": "postgresql+psycopg://u:pw@db/x"}
    settings = load_settings(cfg, environ=env)
    assert settings.gateway.port == 9000 and settings.gateway.host == "0.0.0.0"
    assert settings.store.database_url == "postgresql+psycopg://u:pw@db/x"
    assert settings.source == str(cfg)


def test_config_path_comes_from_corral_config(tmp_path):
    cfg = write(tmp_path / "other.yaml", "gateway:\n  port: 7001\n")
    assert load_settings(environ={"CORRAL_CONFIG": str(cfg)}).gateway.port == 7001


def test_unknown_key_names_file_key_and_fix(tmp_path):
    cfg = write(tmp_path / "c.yaml", "gateway:\n  prot: 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    message = str(info.value)
    assert str(cfg) in message and "gateway.prot" in message and "port" in message


def test_wrong_type_from_a_variable_names_the_variable():
    with pytest.raises(ConfigError, match="CORRAL_GATEWAY__PORT: key 'gateway.port'"):
        load_settings(environ={"CORRAL_GATEWAY__PORT": "eighty"})


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CORRAL_DATABASE_URL": "mysql://x/y"}, "unsupported database"),
        ({"CORRAL_DATABASE_URL": "not a url"}, "not a database URL"),
        ({"CORRAL_REDIS_URL": "http://x"}, "redis://"),
        ({"CORRAL_ARTIFACTS_URL": "nosuch://bucket"}, "unknown storage protocol"),
    ],
)
def test_bad_urls_fail_before_anything_starts(env, needle):
    with pytest.raises(ConfigError, match=needle):
        load_settings(environ=env)


def test_malformed_yaml_gives_line_and_column(tmp_path):
    cfg = write(tmp_path / "c.yaml", "gateway:\n  port: [1,\n")
    with pytest.raises(ConfigError, match=r"c.yaml: line \d+, column \d+: malformed YAML"):
        load_settings(cfg, environ={})


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml", environ={})


def test_deployment_routes_are_validated(tmp_path):
    good = write(
        tmp_path / "good.yaml",
        """
deployments:
  support:
    mode: canary
    sticky_by: user
    routes:
      - target: support@production
        weight: 90
      - target: support@staging
        weight: 10
    fallbacks:
      - url: http://127.0.0.1:8001/v1
        model: upstream
        api_key_env: UPSTREAM_KEY
        price: {prompt_per_1k: 0.0005, completion_per_1k: 0.0015}
""",
    )
    settings = load_settings(good, environ={})
    assert settings.deployments["support"].routes[1].weight == 10
    bad = write(tmp_path / "bad.yaml", "deployments:\n  s:\n    routes:\n      - url: http://x/v1\n")
    with pytest.raises(ConfigError, match="deployments.s.routes.0.*needs `model:`"):
        load_settings(bad, environ={})
    both = write(
        tmp_path / "both.yaml", "deployments:\n  s:\n    routes:\n      - {target: a@1, url: http://x}\n"
    )
    with pytest.raises(ConfigError, match="either `target:`"):
        load_settings(both, environ={})
    typo = write(
        tmp_path / "typo.yaml", "deployments:\n  s:\n    routes:\n      - {target: a@1, wieght: 3}\n"
    )
    with pytest.raises(ConfigError, match="unknown key 'deployments.s.routes.0.wieght'.*weight"):
        load_settings(typo, environ={})


def test_masked_hides_passwords():
    settings = load_settings(environ={"CORRAL_DATABASE_URL": "postgresql+psycopg://u:hunter2@db/x"})
    shown = masked(settings)
    assert "hunter2" not in str(shown) and shown["store"]["database_url"] == "postgresql+psycopg://u:***@db/x"
