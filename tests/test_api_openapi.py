"""The enterprise API's OpenAPI document is a reviewed snapshot: a change to a route, a parameter or a body
shows up as a diff of tests/snapshots/enterprise-openapi.json (regenerate with UPDATE_SNAPSHOTS=1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from test_api_support import ApiEnv, api_env

SNAPSHOT = Path(__file__).parent / "snapshots" / "enterprise-openapi.json"


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest) -> ApiEnv:
    return api_env(request)


def test_openapi_snapshot(env: ApiEnv) -> None:
    spec = httpx.get(env.url + "/openapi.json").json()
    text = json.dumps(spec, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(text, encoding="utf-8")
    assert SNAPSHOT.exists(), "no snapshot yet: UPDATE_SNAPSHOTS=1 pytest tests/test_api_openapi.py, then review it"
    assert text == SNAPSHOT.read_text(encoding="utf-8"), "the API changed: review, then UPDATE_SNAPSHOTS=1 pytest"


def test_every_operation_is_versioned_documented_and_secured(env: ApiEnv) -> None:
    spec = httpx.get(env.url + "/openapi.json").json()
    tags = set()
    for path, ops in spec["paths"].items():
        assert path.startswith("/api/v1/") or path == "/metrics", path
        for method, op in ops.items():
            assert op.get("summary"), (method, path)
            assert "429" in op["responses"] or path == "/api/v1/health"
            if path != "/api/v1/health":
                assert op.get("security") == [{"HTTPBearer": []}], (method, path)
                assert "401" in op["responses"], (method, path)
            tags.update(op.get("tags", []))
    # one router per resource
    assert tags == {"alerts", "incidents", "assets", "baseline", "rules", "stats", "sensors", "jobs", "tokens", "audit", "health"}
