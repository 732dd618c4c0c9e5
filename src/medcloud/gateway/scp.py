"""DICOM C-STORE receiver: modalities and PACS push images to the gateway over DIMSE.

Each received instance goes through the same intake as a file (de-identify, then outbox or
quarantine) and the sender gets Success only after the outbox has committed it, so a C-STORE that
succeeded is never lost. A resend of an instance already taken is answered Success without being
processed again. TCP_NODELAY is set on every association's socket: without it Nagle's algorithm and
delayed ACKs cap DIMSE at ~10 instances/s per association (FACTS.md).
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medcloud.gateway.intake import Intake

log = logging.getLogger("medcloud.gateway")

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000


def _nodelay(sock: Any) -> None:
    raw = getattr(sock, "socket", sock)
    if isinstance(raw, socket.socket):
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class StoreSCP:
    """A pynetdicom Storage SCP (plus Verification, for C-ECHO) that feeds an `Intake`."""

    def __init__(
        self,
        intake: Intake,
        *,
        host: str = "127.0.0.1",
        port: int = 11112,
        ae_title: str = "MEDCLOUD",
        calling_aets: list[str] | None = None,
    ) -> None:
        self.intake = intake
        self.host = host
        self.port = port
        self.ae_title = ae_title
        self.calling_aets = calling_aets or []
        self._server: Any = None
        self.nodelay_sockets = 0

    def start(self) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = AE(ae_title=self.ae_title)
        # Every transfer syntax: the instance is stored as sent (compressed pixels included).
        for cx in AllStoragePresentationContexts:
            if cx.abstract_syntax is not None:
                ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        ae.maximum_pdu_size = 0  # no limit: fewer PDUs per instance
        if self.calling_aets:
            ae.require_calling_aet = self.calling_aets
        handlers: list[Any] = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_CONN_OPEN, self._on_open)]
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        _nodelay(self._server.socket)  # Linux: accepted sockets inherit it; _on_open makes sure
        self.port = int(self._server.socket.getsockname()[1])
        log.info("DICOM C-STORE receiver %s listening on %s:%d", self.ae_title, self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_open(self, event: Any) -> None:
        try:
            _nodelay(event.assoc.dul.socket.socket)
            self.nodelay_sockets += 1
        except (AttributeError, OSError) as exc:
            log.warning("could not set TCP_NODELAY on a DICOM association: %s", exc)

    def _on_store(self, event: Any) -> Any:
        from pydicom import Dataset

        uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "unknown")
        requestor = event.assoc.requestor
        calling = str(requestor.ae_title).strip()
        source = f"dicom://{calling}@{requestor.address}/{uid}"
        try:
            data = event.encoded_dataset(include_meta=True)
        except Exception as exc:  # pynetdicom could not assemble what the peer sent
            log.warning("C-STORE from %s: cannot read the dataset: %s", calling, exc)
            return STATUS_CANNOT_UNDERSTAND
        outcome, reason = self.intake.receive(data, source, f"{uid}.dcm")
        if outcome in ("queued", "duplicate", "quarantined", "seen"):
            return STATUS_SUCCESS
        status = Dataset()
        status.Status = STATUS_OUT_OF_RESOURCES if reason and "too large" in reason else STATUS_CANNOT_UNDERSTAND
        status.ErrorComment = (reason or outcome)[:64]
        return status
