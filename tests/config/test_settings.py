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


def test_a_key_set_twice_is_refused_naming_file_key_and_line(tmp_path):
    cfg = write(tmp_path / "c.yaml", "gateway:\n  port: 9000\ndeployments: {}\ngateway:\n  host: 0.0.0.0\n")
    with pytest.raises(
        ConfigError, match=r"c.yaml: line 4, column 1: duplicate key 'gateway' \(first set on line 1\)"
    ):
        load_settings(cfg, environ={})
    nested = write(tmp_path / "n.yaml", "gateway:\n  port: 9000\n  port: 9001\n")
    with pytest.raises(ConfigError, match="line 3.*duplicate key 'port'"):
        load_settings(nested, environ={})


def test_merge_keys_may_be_overridden_beside_them(tmp_path):
    cfg = write(
        tmp_path / "c.yaml",
        "x-route: &r {target: a@1, weight: 1}\n"
        "deployments:\n  s:\n    routes:\n      - {<<: *r, weight: 3}\n",
    )
    with pytest.raises(ConfigError, match="unknown key 'x-route'"):  # merged fine; the anchor key is unknown
        load_settings(cfg, environ={})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("gateway:\n  port: true\n", "gateway.port': Input should be a valid integer (got True)"),
        ('auth:\n  require_keys: "no"\n', "auth.require_keys': Input should be a valid boolean (got 'no')"),
        ("auth:\n  require_keys: 0\n", "auth.require_keys': Input should be a valid boolean (got 0)"),
        ('gateway:\n  port: "8000"\n', "gateway.port': Input should be a valid integer"),
        ("deployments:\n  s:\n    routes:\n      - {url: http://x/v1, model: 5}\n", "routes.0.model'"),
    ],
)
def test_settings_types_are_strict_in_yaml(tmp_path, text, needle):
    cfg = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    assert str(cfg) in str(info.value) and needle in str(info.value)


def test_variables_are_strings_that_still_set_numbers_and_booleans():
    env = {
        "CORRAL_GATEWAY__PORT": "9000",
        "CORRAL_GATEWAY__MAX_BODY_MB": "2.5",
        "CORRAL_AUTH__REQUIRE_KEYS": "False",
        "CORRAL_STORE__AUTO_UPGRADE": "true",
        "CORRAL_DEPLOYMENTS__S": '{"routes": [{"url": "http://x/v1", "model": "m"}]}',
        "CORRAL_DEPLOYMENTS__S__RETRIES": "3",
    }
    settings = load_settings(environ=env)
    assert settings.gateway.port == 9000 and settings.gateway.max_body_mb == 2.5
    assert settings.auth.require_keys is False and settings.store.auto_upgrade is True
    assert settings.deployments["s"].retries == 3
    for value in ("0", "no", "off", ""):
        with pytest.raises(ConfigError, match="CORRAL_AUTH__REQUIRE_KEYS: key 'auth.require_keys'"):
            load_settings(environ={"CORRAL_AUTH__REQUIRE_KEYS": value})


def test_a_section_nothing_reads_yet_is_refused_when_set(monkeypatch):
    from pydantic import ValidationError

    from corral.config.sections import PipelineSettings

    monkeypatch.setattr(PipelineSettings, "NOT_AVAILABLE_YET", {"poll_s": "fast polling"})
    with pytest.raises(ValidationError, match="fast polling is not available yet"):
        PipelineSettings.model_validate({"poll_s": 1.0})


def test_the_pipeline_section_lists_the_files_serve_schedules(tmp_path):
    cfg = write(tmp_path / "c.yaml", "pipeline:\n  files: [refresh.yaml]\n  poll_s: 5.0\n")
    settings = load_settings(cfg, environ={})
    assert settings.pipeline.files == ["refresh.yaml"] and settings.pipeline.enabled
    with pytest.raises(ConfigError, match="pipeline.schedule"):
        load_settings(write(tmp_path / "d.yaml", "pipeline:\n  schedule: daily\n"), environ={})


def test_a_bad_target_names_the_file_and_key(tmp_path):
    cfg = write(tmp_path / "c.yaml", "deployments:\n  chat:\n    routes:\n      - target: 'bad name@1'\n")
    with pytest.raises(ConfigError, match=r"c.yaml: key 'deployments.chat.routes.0.target': invalid name"):
        load_settings(cfg, environ={})
