"""The served OpenAPI description and the server agree: schemathesis generates requests from it and checks
every answer for conformance (status codes, content types, headers, error schema), that schema-valid
requests are accepted, and that no input yields a 5xx."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

EXAMPLES = 25  # per operation
CONFORMANCE = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.positive_data_acceptance,
]
# what JSON Schema cannot say: canary shares within 100, some weight above 0, references that resolve
SEMANTIC_CHECKS_ONLY_THE_SERVER_MAKES = {"PUT /admin/deployments/{name}"}


def test_the_server_conforms_to_its_openapi_description(gateway, fake, h, db_url):
    config = h.settings(
        {"m": {"routes": [h.url_route(fake)]}}, store={"database_url": db_url, "auto_upgrade": True}
    )
    with gateway(config) as gw:
        spec = httpx.get(gw.base_url + "/openapi.json").json()
        schema = schemathesis.openapi.from_dict(spec)
        schema.config.update(base_url=gw.base_url)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 15
        auth = {"Authorization": f"Bearer {h.ADMIN_KEY}"}
        for operation in operations:
            chosen = [
                c
                for c in CONFORMANCE
                if not (
                    c is checks.positive_data_acceptance
                    and operation.label in SEMANTIC_CHECKS_ONLY_THE_SERVER_MAKES
                )
            ]

            _fuzz(operation, auth, chosen)


def _fuzz(operation, auth, chosen) -> None:  # type: ignore[no-untyped-def]
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case):  # type: ignore[no-untyped-def]
        response = case.call(headers={**(case.headers or {}), **auth}, timeout=30)
        case.validate_response(response, checks=chosen)

    check()


def test_unsupported_methods_get_405_with_allow(gateway, fake, h):
    with gateway(h.settings({"m": {"routes": [h.url_route(fake)]}})) as gw, h.admin(gw) as api:
        spec = api.get("/openapi.json").json()
        for path, operations in spec["paths"].items():
            concrete = path.replace("{key}", "nosuch").replace("{name}", "nosuch").replace("{id}", "nosuch")
            documented = {m.upper() for m in operations}
            for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "TRACE"):
                if method in documented:
                    continue
                answer = api.request(method, concrete)
                assert answer.status_code == 405, (method, path, answer.status_code)
                allowed = {m.strip() for m in answer.headers["allow"].split(",")}
                assert allowed == documented, (method, path, allowed)
