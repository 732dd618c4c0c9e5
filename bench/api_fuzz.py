"""Property-based API fuzzing of the hub with schemathesis, against its own OpenAPI document.

    .venv/bin/python bench/api_fuzz.py [--examples 25] [--seed 1] [--roles admin,researcher,site]
                                       [--phases examples,coverage,fuzzing,stateful] [--max-time S]

A real hub (`medcloud hub serve`, SQLite catalog in a temporary folder) on a free 127.0.0.1 port, a
few de-identified DICOM files ingested so that the lists and lookups have something to find, then
`schemathesis run` once per role with a real bearer token of that role, every check on. The OpenAPI
document is the one the hub serves (`GET /api/v1/openapi.json`, token needed).

What counts (one JSON object is printed):
- `requests`: HTTP requests schemathesis sent (from its NDJSON event log), per role and in all;
- `server_errors`: responses with status >= 500;
- `schema_violations`: failed checks that compare a response with the document (status code,
  content type, response headers, response body schema, the Allow header of a 405);
- `failures_by_check` / `failures_by_code`: every failed check, each counted once per request;
- `statuses`: how often each status code came back.
Exit status 1 when there was a server error or a schema violation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "src"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

SCHEMA_CHECKS = frozenset(
    {
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "allow_header_conformance",
    }
)
PROJECT = "fuzz"
SITE = "fuzzsite"


def make_tokens(data: Path) -> dict[str, str]:
    """One token per role, straight into the catalog (the hub is not running yet)."""
    from medcloud.config import load_settings
    from medcloud.security.tokens import issue_token
    from medcloud.store import Catalog

    settings = load_settings(data_dir=data)
    data.mkdir(parents=True, exist_ok=True)
    cat = Catalog.from_settings(settings)
    cat.migrate()
    try:
        return {
            "admin": issue_token(cat, role="admin").token,
            "researcher": issue_token(cat, role="researcher", projects=[PROJECT]).token,
            "site": issue_token(cat, role="site", site=SITE, projects=[PROJECT]).token,
        }
    finally:
        cat.dispose()


def seed_data(url: str, tokens: dict[str, str], n: int = 6) -> int:
    """Register the site and ingest `n` de-identified DICOM files; returns how many were stored."""
    import httpx
    from tests.hub.conftest import deidentified_dicom

    stored = 0
    with httpx.Client(timeout=60) as client:
        client.put(
            f"{url}/api/v1/sites/{SITE}",
            json={"targets": {}},
            headers={"Authorization": f"Bearer {tokens['admin']}"},
        )
        study = "2.25.4242"
        for i in range(n):
            data = deidentified_dicom(study_uid=study, series_uid=f"{study}.{i % 2}")
            r = client.post(
                f"{url}/api/v1/ingest",
                content=data,
                headers={"Authorization": f"Bearer {tokens['site']}", "Content-Type": "application/dicom"},
            )
            stored += r.status_code in (200, 201)
    return stored


@contextmanager
def running_hub(data: Path) -> Iterator[str]:
    from tests.live_hub import hub_process

    with hub_process(data) as url:
        yield url


def run_schemathesis(
    url: str, token: str, schema_file: Path, out: Path, *, examples: int, seed: int, phases: str,
    max_time: float | None, workers: int,
) -> dict[str, Any]:  # fmt: skip
    """One `schemathesis run`; returns its counts from the NDJSON event log."""
    exe = Path(sys.executable).with_name("schemathesis")
    cmd = [
        str(exe), "run", str(schema_file), "--url", url, "-H", f"Authorization: Bearer {token}",
        "--checks", "all", "--max-examples", str(examples), "--seed", str(seed), "--workers", str(workers),
        "--phases", phases, "--no-shrink", "--report", "ndjson", "--report-ndjson-path", str(out),
        "--request-timeout", "60", "--suppress-health-check", "all", "--warnings", "off",
    ]  # fmt: skip
    if max_time:
        cmd += ["--max-time", str(int(max_time))]
    started = time.monotonic()
    proc = subprocess.run(  # in the report's folder: schemathesis keeps a .schemathesis cache where it runs
        cmd, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}, check=False, cwd=out.parent
    )
    summary = parse_events(out)
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary["exit_code"] = proc.returncode
    summary["tool_errors"] = summary.get("tool_errors", 0)
    if proc.returncode not in (0, 1):
        summary["stderr_tail"] = (proc.stdout + proc.stderr)[-2000:]
    return summary


def parse_events(path: Path) -> dict[str, Any]:
    """Requests, statuses and failed checks from schemathesis' NDJSON events."""
    requests = 0
    statuses: Counter[str] = Counter()
    by_check: Counter[str] = Counter()
    by_code: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    server_errors = 0
    tool_errors = 0
    for line in path.read_text().splitlines() if path.exists() else ():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:  # a run stopped mid-write leaves a cut last line
            tool_errors += 1
            continue
        kind, body = next(iter(event.items()))
        if kind == "NonFatalError":
            tool_errors += 1
        if kind != "ScenarioFinished":
            continue
        recorder = body.get("recorder", {})
        for interaction in (recorder.get("interactions") or {}).values():
            response = interaction.get("response")
            requests += 1
            if response is None:
                statuses["no-response"] += 1
                continue
            status = int(response["status_code"])
            statuses[str(status)] += 1
            server_errors += status >= 500
        for case_id, checks in (recorder.get("checks") or {}).items():
            for check in checks:
                if check.get("status") != "failure":
                    continue
                by_check[check["name"]] += 1
                failure = (check.get("failure_info") or {}).get("failure") or {}
                code = failure.get("code", "?")
                by_code[code] += 1
                ex = examples.setdefault(code, [])
                if len(ex) < 3:
                    case = (recorder.get("cases") or {}).get(case_id, {}).get("value", {})
                    ex.append(f"{case.get('method')} {case.get('path')}: {failure.get('message', '')[:200]}")
    return {
        "requests": requests,
        "server_errors": server_errors,
        "schema_violations": sum(n for name, n in by_check.items() if name in SCHEMA_CHECKS),
        "failures_by_check": dict(by_check),
        "failures_by_code": dict(by_code),
        "failure_examples": examples,
        "statuses": dict(sorted(statuses.items())),
        "tool_errors": tool_errors,
    }


def run(
    *, examples: int, seed: int, roles: list[str], phases: str, max_time: float | None, workers: int,
    keep: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="medcloud-apifuzz-"))
    try:
        data = tmp / "data"
        tokens = make_tokens(data)
        with running_hub(data) as url:
            stored = seed_data(url, tokens)
            schema = httpx.get(
                f"{url}/api/v1/openapi.json", headers={"Authorization": f"Bearer {tokens['admin']}"}, timeout=30
            ).json()
            schema_file = tmp / "openapi.json"
            schema_file.write_text(json.dumps(schema))
            per_role = {}
            for role in roles:
                per_role[role] = run_schemathesis(
                    url, tokens[role], schema_file, tmp / f"{role}.ndjson", examples=examples, seed=seed,
                    phases=phases, max_time=max_time, workers=workers,
                )  # fmt: skip
            alive = httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for f in tmp.glob("*.ndjson"):
                shutil.copy(f, keep / f.name)
            shutil.copy(tmp / "hub.log", keep / "hub.log")
        hub_tracebacks = (tmp / "hub.log").read_text(errors="replace").count("Traceback")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total: Counter[str] = Counter()
    by_check: Counter[str] = Counter()
    for r in per_role.values():
        total.update({k: r[k] for k in ("requests", "server_errors", "schema_violations", "tool_errors")})
        by_check.update(r["failures_by_check"])
    return {
        "tool": "schemathesis",
        "operations": sum(len(v) for v in schema.get("paths", {}).values()),
        "seeded_files": stored,
        "examples_per_operation": examples,
        "seed": seed,
        "phases": phases,
        "requests": total["requests"],
        "server_errors": total["server_errors"],
        "schema_violations": total["schema_violations"],
        "failures_by_check": dict(by_check),
        "tool_errors": total["tool_errors"],
        "hub_alive_after": alive,
        "hub_log_tracebacks": hub_tracebacks,
        "roles": per_role,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--examples", type=int, default=25, help="schemathesis --max-examples per operation")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--roles", default="admin,researcher,site")
    ap.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    ap.add_argument("--max-time", type=float, default=None, help="seconds per role (schemathesis --max-time)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="copy the event logs and the hub log here")
    a = ap.parse_args(argv)
    summary = run(
        examples=a.examples, seed=a.seed, roles=[r for r in a.roles.split(",") if r], phases=a.phases,
        max_time=a.max_time, workers=a.workers, keep=a.keep,
    )  # fmt: skip
    print(json.dumps(summary, indent=2))
    return 1 if summary["server_errors"] or summary["schema_violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
