"""Audit events as FHIR R4 AuditEvent resources shaped by the IHE Basic Audit Log Patterns (BALP).

Each stored event becomes one AuditEvent: type and subtype from the DICOM (DCM) and FHIR restful
interaction code systems BALP uses, action C/R/U/D/E, recorded, outcome (0 success, 4 refused,
8 failed), the user agent (who, requestor, network address), the hub as source observer, and the
resource touched as entity. Acts under a break-glass account carry purposeOfUse BTG.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["audit_event", "bundle"]

DCM = "http://dicom.nema.org/resources/ontology/DCM"
REST = "http://hl7.org/fhir/restful-interaction"
AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
MEDCLOUD = "urn:medcloud:audit"
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"

_TYPES = {
    "import": (DCM, "110107", "Import"),
    "export": (DCM, "110106", "Export"),
    "query": (DCM, "110112", "Query"),
    "login": (DCM, "110114", "User Authentication"),
    "security": (DCM, "110113", "Security Alert"),
    "attrs": (DCM, "110137", "User Security Attributes Changed"),
    "app": (DCM, "110100", "Application Activity"),
    "rest": (AUDIT_TYPE, "rest", "Restful Operation"),
}
_REST_SUBTYPE = {"C": "create", "R": "read", "U": "update", "D": "delete", "E": "search"}
_PROFILE = {"C": "IHE.BasicAudit.Create", "R": "IHE.BasicAudit.Read", "U": "IHE.BasicAudit.Update",
            "D": "IHE.BasicAudit.Delete"}  # fmt: skip


def _classify(action: str, outcome: str) -> tuple[str, str]:
    """(type key, CRUDE action) for one of medcloud's audit actions."""
    if outcome.startswith("refused:401"):
        return "login", "E"
    if action.startswith(("token.", "break-glass.")):
        return ("attrs", "C") if action.endswith((".create", ".open")) else ("attrs", "U")
    if action.startswith("audit."):
        return "app", "E"
    if action in ("ingest", "report.ingest", "society.load") or action.endswith(".ingest"):
        return "import", "C"
    if action.endswith((".file.read", ".download", ".export")):
        return "export", "R"
    if action.endswith(".search") or action.startswith("GET "):
        return "query", "E"
    last = action.rsplit(".", 1)[-1]
    crude = {"read": "R", "create": "C", "register": "C", "save": "C", "freeze": "C", "submit": "C", "run": "E",
             "update": "U", "cancel": "U", "delete": "D", "revoke": "D"}.get(last)  # fmt: skip
    if action.startswith(("POST ", "PUT ", "PATCH ")):
        crude = "C" if action.startswith("POST ") else "U"
    if action.startswith("DELETE "):
        crude = "D"
    return "rest", crude or "E"


def _outcome(outcome: str) -> str:
    if outcome.startswith("refused"):
        return "4"  # minor failure: the request was refused, nothing happened
    if outcome.startswith(("error", "failed")):
        return "8"
    return "0"


def _entity(resource: str) -> dict[str, Any]:
    kind, _, ident = resource.partition("/")
    what: dict[str, Any] = {"identifier": {"system": f"{MEDCLOUD}:{kind or 'resource'}", "value": resource}}
    if kind in ("study", "studies") and ident:
        what = {"type": "ImagingStudy", "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{ident}"}}
    elif kind == "instance" and ident:
        what["display"] = f"DICOM SOP Instance {ident}"
    return {"what": what, "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"}}


def audit_event(row: Mapping[str, Any], *, hub: str = "medcloud-hub") -> dict[str, Any]:
    """One stored audit row as a FHIR R4 AuditEvent (BALP) resource."""
    action, outcome, subject = str(row["action"]), str(row["outcome"]), str(row["subject"])
    kind, crude = _classify(action, outcome)
    system, code, display = _TYPES[kind]
    detail = row.get("detail") or "{}"
    detail = json.loads(detail) if isinstance(detail, str) else dict(detail)
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}]},
        "who": {"identifier": {"system": f"{MEDCLOUD}:subject", "value": subject}},
        "requestor": True,
    }
    if row.get("client"):
        agent["network"] = {"address": str(row["client"]), "type": "2"}  # 2: IP address
    glass = detail.get("break_glass") or ("!break-glass" in subject) or action.startswith("break-glass.")
    if glass:
        agent["purposeOfUse"] = [{"coding": [{"system": ACT_REASON, "code": "BTG", "display": "break the glass"}]}]
    subtype = [{"system": REST, "code": _REST_SUBTYPE[crude]}] if kind == "rest" else []
    subtype.append({"system": f"{MEDCLOUD}:action", "code": action})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"medcloud-audit-{int(row['seq'])}",
        "type": {"system": system, "code": code, "display": display},
        "subtype": subtype,
        "action": crude,
        "recorded": str(row["ts"]),
        "outcome": _outcome(outcome),
        "outcomeDesc": outcome,
        "agent": [
            agent,
            {
                "type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
                "who": {"display": hub},
                "requestor": False,
            },
        ],
        "source": {
            "observer": {"display": hub},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "entity": [_entity(str(row["resource"]))],
    }
    if kind == "rest" and crude in _PROFILE:
        event["meta"] = {"profile": [BALP + _PROFILE[crude]]}
    if detail.get("severity") == "high" or glass:
        event["meta"] = {**event.get("meta", {}), "tag": [{"system": f"{MEDCLOUD}:severity", "code": "high"}]}
    # The chain link lets a reader match the FHIR copy to the signed log (`medcloud audit prove`).
    event["entity"].append(
        {"what": {"identifier": {"system": f"{MEDCLOUD}:event-hash", "value": str(row["hash"])}},
         "type": {"system": ENTITY_TYPE, "code": "4", "display": "Other"}, "description": f"audit event {row['seq']}"}
    )  # fmt: skip
    return event


def bundle(rows: Iterable[Mapping[str, Any]], *, hub: str = "medcloud-hub") -> dict[str, Any]:
    """A FHIR collection Bundle of AuditEvents."""
    entries = [
        {"fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, MEDCLOUD + ':' + str(r['hash']))}",
         "resource": audit_event(r, hub=hub)}
        for r in rows
    ]  # fmt: skip
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}
