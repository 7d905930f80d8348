"""No client input yields a 5xx: schemathesis generates requests from the served OpenAPI description."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

EXAMPLES = 25  # per operation


def test_no_client_input_yields_a_server_error(gateway, fake, h, db_url):
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

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
            )
            def check(case):  # type: ignore[no-untyped-def]
                response = case.call(headers={**(case.headers or {}), **auth}, timeout=30)
                case.validate_response(response, checks=[not_a_server_error])

            check()
