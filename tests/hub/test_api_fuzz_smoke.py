"""A short schemathesis run against a live hub (the CI-sized cut of bench/api_fuzz.py, issue 12).

Every check schemathesis has is on, among them `ignored_auth` (the same request without the token must be
refused). The bench runs the same harness with thousands of requests and every role.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from medcloud.config import load_settings
from medcloud.hub.app import create_app
from medcloud.hub.state import HubState
from tests.live_hub import hub_in_thread

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import api_fuzz  # noqa: E402

pytest.importorskip("schemathesis")


@pytest.mark.slow  # ~20 s on an idle 2-core machine (hub start, schemathesis start, ~200 requests)
def test_schemathesis_finds_no_server_error_or_schema_violation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    tokens = api_fuzz.make_tokens(data)
    state = HubState.open(load_settings(data_dir=data))
    try:
        with hub_in_thread(create_app(state.settings, state=state)) as url:
            assert api_fuzz.seed_data(url, tokens, n=2) == 2
            schema = httpx.get(f"{url}/api/v1/openapi.json", headers={"Authorization": f"Bearer {tokens['admin']}"})
            schema_file = tmp_path / "openapi.json"
            schema_file.write_text(schema.text)
            got = api_fuzz.run_schemathesis(
                url, tokens["researcher"], schema_file, tmp_path / "events.ndjson", examples=2, seed=12,
                phases="fuzzing", max_time=None, workers=1,
            )  # fmt: skip
    finally:
        state.close()
    summary = json.dumps({k: got[k] for k in ("failures_by_code", "failure_examples", "statuses")}, indent=1)
    assert got["requests"] >= 150, summary
    assert got["server_errors"] == 0, summary
    assert got["schema_violations"] == 0, summary
    assert got["tool_errors"] == 0, got
    # The run reached the routes, not only their refusals.
    assert int(got["statuses"].get("200", 0)) > 10, summary
    assert "ignored_auth" not in got["failures_by_check"], summary  # a request without the token is refused


def test_the_harness_counts_what_schemathesis_reports(tmp_path: Path) -> None:
    """A 500 and an undocumented status in the event log are counted (the smoke run cannot pass blind)."""
    checks = [
        {"name": "not_a_server_error", "status": "failure", "failure_info": {"failure": {"code": "ST101"}}},
        {"name": "status_code_conformance", "status": "failure", "failure_info": {"failure": {"code": "ST103"}}},
        {"name": "content_type_conformance", "status": "success"},
    ]
    event = {"ScenarioFinished": {"recorder": {
        "cases": {"c1": {"value": {"method": "GET", "path": "/x"}}},
        "interactions": {"c1": {"response": {"status_code": 500}}, "c2": {"response": {"status_code": 200}}},
        "checks": {"c1": checks},
    }}}  # fmt: skip
    log = tmp_path / "events.ndjson"
    log.write_text(json.dumps(event) + "\n" + json.dumps({"NonFatalError": {}}) + "\n")
    got = api_fuzz.parse_events(log)
    assert got["requests"] == 2 and got["server_errors"] == 1 and got["schema_violations"] == 1
    assert got["failures_by_code"] == {"ST101": 1, "ST103": 1} and got["tool_errors"] == 1
    assert got["statuses"] == {"200": 1, "500": 1}
