"""Sending de-identified reports to the hub: batched, authenticated POSTs retried with backoff.

Reports do not go through the outbox: they are small, a RIS export is re-readable, and a resend is
harmless (the hub stores each report once), so a failed run is simply run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medcloud.errors import InvalidInput, MedcloudError
from medcloud.gateway.forwarder import backoff_delay, parse_retry_after

if TYPE_CHECKING:
    import httpx

    from medcloud.deid.reports import DeidReport

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class HubUnavailable(MedcloudError):
    """The hub could not be reached or kept failing after every retry."""

    status = 503
    type_slug = "hub-unavailable"
    title = "Hub unavailable"
    exit_code = 8


@dataclass
class SendSummary:
    """What the hub did with the reports sent: counts, and each rejected report's source and reason."""

    stored: int = 0
    duplicate: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("detail") or body.get("title") or response.status_code) if isinstance(body, dict) else ""


def send_reports(
    client: httpx.Client,
    reports: Sequence[DeidReport],
    *,
    project: str | None = None,
    batch_size: int = 200,
    attempts: int = 6,
    backoff_base: float = 0.5,
    backoff_cap: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> SendSummary:
    """POST reports in batches to `client` (base URL and token set); retries transport errors, 429 and 5xx."""
    import httpx

    summary = SendSummary()
    headers = {"X-Medcloud-Project": project} if project else {}
    for start in range(0, len(reports), batch_size):
        batch = reports[start : start + batch_size]
        payload: list[dict[str, Any]] = [r.to_json() for r in batch]
        for attempt in range(attempts):
            wait: float | None = None
            try:
                response = client.post("/api/v1/reports", json=payload, headers=headers)
            except httpx.TransportError as exc:
                if attempt == attempts - 1:
                    raise HubUnavailable(f"cannot reach the hub: {exc}") from None
            else:
                if response.status_code in _RETRY_STATUSES:
                    if attempt == attempts - 1:
                        raise HubUnavailable(f"hub answered {response.status_code}: {_problem(response)}")
                    wait = parse_retry_after(response.headers.get("retry-after"))
                elif response.status_code >= 400:
                    # A refusal will not change on retry: say why, with the first report's source.
                    raise InvalidInput(
                        f"hub refused reports {start}-{start + len(batch) - 1} "
                        f"({batch[0].source or 'batch'}...): {response.status_code} {_problem(response)}"
                    )
                else:
                    for item in response.json()["items"]:
                        status = item["status"]
                        if status == "stored":
                            summary.stored += 1
                        elif status == "duplicate":
                            summary.duplicate += 1
                        else:
                            source = batch[int(item["index"])].source
                            summary.rejected.append((source, str(item.get("reason", ""))))
                    break
            sleep(wait if wait is not None else backoff_delay(attempt, backoff_base, backoff_cap))
    return summary
