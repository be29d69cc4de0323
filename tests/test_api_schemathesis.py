"""Property-based run of every operation of the enterprise API's OpenAPI schema (schemathesis), against a
real ``icswatch serve`` on a copy of the replayed demo data, with an admin token (so every route is
reached, writes included). Checks: never a 5xx, status codes, content types and bodies as the schema
declares. The number of examples per operation is bounded so the run stays under about a minute."""

from __future__ import annotations

from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from test_api_support import api_env

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MAX_EXAMPLES = 12


@pytest.fixture(scope="module")
def fuzz_server(request: pytest.FixtureRequest) -> tuple[Any, dict[str, str]]:
    env = api_env(request)
    return env.copy("schemathesis")


@pytest.fixture(scope="module")
def api_schema(fuzz_server: tuple[Any, dict[str, str]]) -> Any:
    server, _ = fuzz_server
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.timeout(300)
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_schema(case: Any, fuzz_server: tuple[Any, dict[str, str]]) -> None:
    server, tokens = fuzz_server
    case.call_and_validate(base_url=server.url, headers={"Authorization": f"Bearer {tokens['admin']}"}, checks=CHECKS, timeout=30)
