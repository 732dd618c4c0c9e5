"""Round events: one audit event per federated round, at the hub or in a local JSONL file.

With a hub URL and a service token, events go to `POST /api/v1/fl/rounds`; without one they are
appended to a JSONL file in the shape of the hub's audit records (subject, action, resource,
outcome, client, detail), so the two are interchangeable.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medcloud.errors import ConfigError


@dataclass
class RoundEvent:
    round: int
    model_version: str
    participants: list[str]
    bytes_up: dict[str, int]
    bytes_down: dict[str, int]
    mode: str
    extra: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The JSON body of `POST /api/v1/fl/rounds`."""
        data = asdict(self)
        data.update(data.pop("extra"))
        return data


class RoundRecorder:
    """Sends each round event to the hub, or appends it to `audit_file`."""

    def __init__(
        self,
        hub: str | None = None,
        token: str | None = None,
        audit_file: Path | None = None,
        subject: str = "fl-aggregator",
    ) -> None:
        if hub and not token:
            raise ConfigError("--hub needs --token (a site- or admin-scoped service token)")
        self.hub = hub.rstrip("/") if hub else None
        self.token = token
        self.audit_file = audit_file
        self.subject = subject
        self.events: list[RoundEvent] = []

    def record(self, event: RoundEvent) -> None:
        self.events.append(event)
        if self.hub:
            import httpx

            resp = httpx.post(
                f"{self.hub}/api/v1/fl/rounds",
                json=event.body(),
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=30,
            )
            resp.raise_for_status()
        elif self.audit_file is not None:
            record = {
                "time": datetime.now(timezone.utc).isoformat(),
                "subject": self.subject,
                "action": "fl.round",
                "resource": f"fl/rounds/{event.round}",
                "outcome": "ok",
                "client": "",
                "detail": event.body(),
            }
            self.audit_file.parent.mkdir(parents=True, exist_ok=True)
            with self.audit_file.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
