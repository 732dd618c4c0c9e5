"""Gateway: receivers (folder watch, file list, C-STORE), de-identification, the durable outbox and the forwarder.

Never loads the hub's catalog or SQLAlchemy (tests/test_architecture.py checks it). The names below load
on first use: `medcloud` imports `medcloud.gateway.cli` for every command, and intake needs pydicom.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medcloud.faces import lazy_face

if TYPE_CHECKING:
    from medcloud.gateway.forwarder import Forwarder, ForwarderConfig
    from medcloud.gateway.intake import Deidentify, Intake
    from medcloud.gateway.outbox import Outbox
    from medcloud.gateway.runner import Gateway, GatewayConfig, RunSummary

_FACE = {
    "Forwarder": "medcloud.gateway.forwarder",
    "ForwarderConfig": "medcloud.gateway.forwarder",
    "Deidentify": "medcloud.gateway.intake",
    "Intake": "medcloud.gateway.intake",
    "Outbox": "medcloud.gateway.outbox",
    "Gateway": "medcloud.gateway.runner",
    "GatewayConfig": "medcloud.gateway.runner",
    "RunSummary": "medcloud.gateway.runner",
}

__all__ = ["Deidentify", "Forwarder", "ForwarderConfig", "Gateway", "GatewayConfig", "Intake", "Outbox", "RunSummary"]

__getattr__, __dir__ = lazy_face(__name__, _FACE)
