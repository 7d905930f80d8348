"""The guard section: named policies chosen per deployment; the old flat keys refused with the new form."""

from __future__ import annotations

import pytest

from corral.config import load_settings
from corral.errors import ConfigError

ROUTE = '{url: "http://127.0.0.1:9/v1", model: m}'


def _write(tmp_path, text):
    path = tmp_path / "corral.yaml"
    path.write_text(text)
    return path


def test_policies_are_chosen_per_deployment_with_default_for_the_rest(tmp_path):
    settings = load_settings(
        _write(
            tmp_path,
            f"""
guard:
  policies:
    default: {{pii: redact, secrets: block, injection: flag, moderation: flag, max_input_tokens: 8000}}
    support: {{pii: pseudonymize, injection: block, moderation: block}}
deployments:
  support: {{guard: support, routes: [{ROUTE}]}}
  plain: {{routes: [{ROUTE}]}}
  raw: {{guard: "off", routes: [{ROUTE}]}}
""",
        ),
        environ={},
    )
    guard = settings.guard
    assert guard.policy_for(settings.deployments["support"]).pii == "pseudonymize"
    assert guard.policy_for(settings.deployments["plain"]).max_input_tokens == 8000
    assert guard.policy_for(settings.deployments["raw"]) is None


def test_old_flat_guard_keys_are_refused_with_the_new_form(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, "guard:\n  pii: redact\n  injection: block\n"), environ={})
    message = str(caught.value)
    assert "guard.injection, guard.pii" in message
    assert "policies:" in message and "default: {pii: redact" in message


def test_a_deployment_naming_an_unknown_policy_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no policy 'strict'.*known: default"):
        load_settings(
            _write(
                tmp_path,
                f"guard: {{policies: {{default: {{pii: flag}}}}}}\n"
                f"deployments: {{x: {{guard: strict, routes: [{ROUTE}]}}}}\n",
            ),
            environ={},
        )


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        ("{pii: scramble}", "pii"),
        ("{pii_kinds: [passport]}", "unknown PII kinds"),
        ("{moderation_terms: {hate: ['(unclosed']}}", "not a pattern"),
        ("{moderation_classifier: {url: 'ftp://x'}}", "http://"),
    ],
)
def test_bad_policy_values_name_the_key(tmp_path, policy, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_settings(_write(tmp_path, f"guard: {{policies: {{default: {policy}}}}}\n"), environ={})


def test_store_bodies_takes_redacted(tmp_path):
    settings = load_settings(
        _write(tmp_path, "tracing: {store_bodies: redacted, retention_days: 30}\n"), environ={}
    )
    assert settings.tracing.store_bodies == "redacted"
    assert settings.tracing.retention_days == 30
