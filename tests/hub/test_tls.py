"""Mutual TLS between gateway and hub, over real TLS on 127.0.0.1.

The hub is served by uvicorn with `hub.server.uvicorn_options` (what `medcloud hub serve` runs); the CA
is `medcloud.security.ca`. Each refusal is paired with a control that shows the same client would be
served by a laxer server, so that a refusal never passes by accident.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from medcloud.config import Settings, load_settings
from medcloud.gateway.forwarder import Forwarder, ForwarderConfig
from medcloud.gateway.outbox import Outbox, SourceRef
from medcloud.hub.app import create_app
from medcloud.hub.server import uvicorn_options
from medcloud.hub.state import HubState
from medcloud.security.ca import init_ca, issue_certificate, list_certificates, revoke_certificate
from medcloud.security.tls import CRYPTREC_TLS12_CIPHERS, client_context, tls_status
from medcloud.security.tokens import issue_token
from tests.live_hub import free_port

from .conftest import deidentified_dicom


@dataclass
class TlsHub:
    url: str
    settings: Settings
    state: HubState
    ca: Path
    certs: Path
    tokens: dict[str, str]

    def client(self, cert: str | None, *, ca: Path | None = None) -> httpx.Client:
        ctx = client_context(
            ca or self.ca / "ca.crt",
            self.certs / f"{cert}.crt" if cert else None,
            self.certs / f"{cert}.key" if cert else None,
        )
        return httpx.Client(base_url=self.url, verify=ctx, timeout=10)


@contextmanager
def serve(settings: Settings, state: HubState) -> Iterator[str]:
    port = free_port()
    app = create_app(settings, state=state)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="error", lifespan="on", **uvicorn_options(settings)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "TLS hub did not start"
        time.sleep(0.02)
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsHub]:
    root = tmp_path_factory.mktemp("tls")
    ca, certs = root / "ca", root / "certs"
    init_ca(ca)
    issue_certificate(ca, "server", "hub", certs, hosts=["127.0.0.1", "localhost"])
    for site in ("site-a", "site-b", "site-r"):
        issue_certificate(ca, "site", site, certs)
    issue_certificate(ca, "operator", "ops", certs, key_type="rsa")
    settings = load_settings(
        data_dir=root / "data",
        tls_cert_file=certs / "hub.crt",
        tls_key_file=certs / "hub.key",
        tls_client_ca_file=ca / "ca.crt",
        tls_crl_file=ca / "crl.pem",
    )
    state = HubState.open(settings)
    tokens = {
        s: issue_token(state.catalog, role="site", site=s, projects=["p1"]).token
        for s in ("site-a", "site-b", "site-r")
    }
    tokens["researcher"] = issue_token(state.catalog, role="researcher", projects=["p1"]).token
    with serve(settings, state) as url:
        yield TlsHub(url, settings, state, ca, certs, tokens)
    state.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _handshake_refused(call: object) -> None:
    """The TLS handshake (or the first read after it, in TLS 1.3) fails: no HTTP answer at all."""
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError)):
        call()  # type: ignore[operator]


def test_good_path_gateway_forward_over_mtls(hub: TlsHub, tmp_path: Path) -> None:
    """The gateway's forwarder, presenting site-a's certificate, delivers a file; the hub stored it."""
    outbox = Outbox(tmp_path / "state")
    data = deidentified_dicom()
    outbox.enqueue(SourceRef("x.dcm", len(data), 1), data, media_type="application/dicom", filename="x.dcm")
    ctx = client_context(hub.ca / "ca.crt", hub.certs / "site-a.crt", hub.certs / "site-a.key")
    fwd = Forwarder(outbox, ForwarderConfig(hub_url=hub.url, token=hub.tokens["site-a"], workers=1, verify=ctx))
    fwd.start()
    try:
        deadline = time.monotonic() + 20
        while outbox.counts().delivered < 1:
            assert time.monotonic() < deadline, f"not delivered: {outbox.counts()} {fwd.stats.snapshot()}"
            time.sleep(0.05)
    finally:
        fwd.stop()
        outbox.close()
    assert hub.state.blobs.exists(hashlib.sha256(data).hexdigest())
    with hub.client("ops") as c:  # an operator certificate carries a researcher's token
        r = c.get("/api/v1/sites", headers=_bearer(hub.tokens["researcher"]))
    assert r.status_code == 200, r.text


def test_no_client_certificate_refused(hub: TlsHub) -> None:
    with hub.client(None) as c:
        _handshake_refused(lambda: c.get("/healthz"))


def test_certificate_from_another_ca_refused(hub: TlsHub, tmp_path: Path) -> None:
    other = tmp_path / "other-ca"
    init_ca(other, name="someone else's CA")
    issue_certificate(other, "site", "site-a", tmp_path / "forged")  # same subject, wrong issuer
    ctx = client_context(hub.ca / "ca.crt", tmp_path / "forged" / "site-a.crt", tmp_path / "forged" / "site-a.key")
    with httpx.Client(base_url=hub.url, verify=ctx, timeout=10) as c:
        _handshake_refused(lambda: c.get("/healthz", headers=_bearer(hub.tokens["site-a"])))


def test_client_verifies_the_hub_against_the_ca(hub: TlsHub, tmp_path: Path) -> None:
    """The gateway refuses a hub whose certificate its CA did not sign."""
    other = tmp_path / "other-ca"
    init_ca(other)
    with hub.client("site-a", ca=other / "ca.crt") as c, pytest.raises(httpx.ConnectError, match="VERIFY_FAILED"):
        c.get("/healthz")


def test_wrong_site_binding_refused(hub: TlsHub) -> None:
    data = deidentified_dicom()
    with hub.client("site-b") as c:
        r = c.post(
            "/api/v1/ingest",
            content=data,
            headers={**_bearer(hub.tokens["site-a"]), "Content-Type": "application/dicom"},
        )
        assert r.status_code == 403, r.text
        assert "site-a" in r.json()["detail"] and "site-b" in r.json()["detail"]
        # a site certificate carries no other kind of token either
        assert c.get("/api/v1/sites", headers=_bearer(hub.tokens["researcher"])).status_code == 403
        # control: site-b's own token over site-b's certificate is let through
        ok = c.post(
            "/api/v1/ingest",
            content=data,
            headers={**_bearer(hub.tokens["site-b"]), "Content-Type": "application/dicom"},
        )
        assert ok.status_code in (200, 201), ok.text
    with hub.client("ops") as c:  # a site token over a non-site certificate
        assert c.get("/api/v1/sites", headers=_bearer(hub.tokens["site-a"])).status_code == 403
    head = hub.state.catalog.audit.head_seq()
    rows = hub.state.catalog.audit.page(after_seq=max(0, head - 20), limit=50)
    refused = [r for r in rows if "site-a" in str(r["subject"]) and "403" in str(r["outcome"]) + str(r["detail"])]
    assert refused, rows  # the refusal is in the audit trail, under the token's holder


def test_revoked_certificate_refused_without_restart(hub: TlsHub) -> None:
    with hub.client("site-r") as c:
        assert c.get("/healthz").status_code == 200
    (row,) = revoke_certificate(hub.ca, "site-r", reason="laptop lost")
    assert row.revoked_at and next(r for r in list_certificates(hub.ca) if r.name == "site-r").revoked_at
    with hub.client("site-r") as c:
        r = c.get("/healthz", headers=_bearer(hub.tokens["site-r"]))
    assert r.status_code == 403 and "revoked" in r.text
    with hub.client("site-a") as c:  # others are untouched
        assert c.get("/healthz").status_code == 200


def test_revoked_before_start_refused_at_handshake(hub: TlsHub) -> None:
    """A hub started with a CRL that lists the certificate refuses it in the TLS handshake itself."""
    issue_certificate(hub.ca, "site", "site-x", hub.certs)
    revoke_certificate(hub.ca, "site-x")
    with serve(hub.settings, hub.state) as url:
        ctx = client_context(hub.ca / "ca.crt", hub.certs / "site-x.crt", hub.certs / "site-x.key")
        with httpx.Client(base_url=url, verify=ctx, timeout=10) as c:
            _handshake_refused(lambda: c.get("/healthz"))


def _raw_handshake(port: int, ctx: ssl.SSLContext) -> str:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return tls.recv(100).decode(errors="replace")


@contextmanager
def _lax_server(hub: TlsHub, minimum: ssl.TLSVersion, ciphers: str) -> Iterator[int]:
    """A control server that accepts old versions / weak suites, to prove a client really offers them."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = minimum
    ctx.set_ciphers(ciphers)
    ctx.load_cert_chain(hub.certs / "hub.crt", hub.certs / "hub.key")
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def run() -> None:
        try:
            conn, _ = srv.accept()
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1000)
                tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except OSError:
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield port
    finally:
        srv.close()
        t.join(5)


def _old_client(hub: TlsHub, version: ssl.TLSVersion | None, ciphers: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(hub.ca / "ca.crt")
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    ctx.set_ciphers(ciphers)
    ctx.load_cert_chain(hub.certs / "site-a.crt", hub.certs / "site-a.key")
    return ctx


@pytest.mark.parametrize(
    ("version", "ciphers"),
    [
        (ssl.TLSVersion.TLSv1_1, "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"),  # TLS 1.1
        (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA256"),  # TLS 1.2, CBC suite outside CRYPTREC's list
        (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"),  # TLS 1.2, SHA-1 CBC
    ],
    ids=["tls1.1", "cbc-sha256", "cbc-sha1"],
)
def test_old_version_and_weak_cipher_refused(hub: TlsHub, version: ssl.TLSVersion, ciphers: str) -> None:
    client = _old_client(hub, version, ciphers)
    with _lax_server(hub, ssl.TLSVersion.TLSv1, "ALL:@SECLEVEL=0") as port:
        assert _raw_handshake(port, client).startswith("HTTP/1.1 200")  # control: the client does speak it
    port = int(hub.url.rsplit(":", 1)[1])
    with pytest.raises(ssl.SSLError):
        _raw_handshake(port, client)


def test_negotiated_suite_is_a_cryptrec_one(hub: TlsHub) -> None:
    client = _old_client(hub, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA256:ALL")
    port = int(hub.url.rsplit(":", 1)[1])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        client.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        # the client offers everything, weak suites first; the hub picks from CRYPTREC's list
        assert tls.cipher()[0] in CRYPTREC_TLS12_CIPHERS.split(":")
        assert tls.version() == "TLSv1.2"


def test_tls_status_evidence(hub: TlsHub) -> None:
    st = tls_status(hub.settings)
    assert st["tls"] and st["mtls"] and st["site_binding"]
    assert st["min_version"] == "TLSv1_2"
    assert set(st["ciphers"]) >= {"TLS_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"}
    assert not [c for c in st["ciphers"] if "CBC" in c or "SHA1" in c or c.endswith("-SHA")]
    assert st["server_cert"]["key"] == "EC secp256r1" and "127.0.0.1" in st["server_cert"]["sans"]
    assert st["server_cert"]["days_left"] > 300 and st["crl"]["file"].endswith("crl.pem")
    assert st["problems"] == [] and st["status"] == "PASS"
    plain = tls_status(load_settings(data_dir=hub.settings.data_dir))
    assert not plain["tls"] and plain["problems"] and plain["status"] == "FAIL"


def test_ca_cli(tmp_path: Path) -> None:
    """`medcloud hub ca init | issue | list | revoke | crl`, as an administrator runs them."""
    import json

    from cryptography import x509
    from typer.testing import CliRunner

    from medcloud.hub.cli import app as hub_app

    run = CliRunner().invoke
    ca, out = str(tmp_path / "ca"), str(tmp_path / "out")
    assert run(hub_app, ["ca", "init", "--ca-dir", ca, "--key-type", "rsa"]).exit_code == 0
    again = run(hub_app, ["ca", "init", "--ca-dir", ca])
    assert again.exit_code != 0  # never overwrites a CA
    issued = run(hub_app, ["ca", "issue", "tokyo-univ", "--ca-dir", ca, "--out", out])
    assert issued.exit_code == 0, issued.output
    row = json.loads(issued.output)
    cert = x509.load_pem_x509_certificate(Path(row["certificate"]).read_bytes())
    assert cert.subject.rfc4514_string() == "CN=tokyo-univ,OU=medcloud site,O=medcloud"
    assert Path(row["key"]).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ca" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert run(hub_app, ["ca", "issue", "bad name", "--ca-dir", ca, "--out", out]).exit_code != 0
    assert run(hub_app, ["ca", "issue", "hub", "--kind", "server", "--ca-dir", ca, "--out", out]).exit_code != 0
    listed = run(hub_app, ["ca", "list", "--ca-dir", ca])
    assert [json.loads(line)["name"] for line in listed.output.splitlines()] == ["tokyo-univ"]
    assert run(hub_app, ["ca", "revoke", row["serial"], "--ca-dir", ca]).exit_code == 0
    assert run(hub_app, ["ca", "revoke", row["serial"], "--ca-dir", ca]).exit_code != 0  # already revoked
    assert run(hub_app, ["ca", "crl", "--ca-dir", ca]).exit_code == 0
    crl = x509.load_pem_x509_crl((tmp_path / "ca" / "crl.pem").read_bytes())
    assert [format(r.serial_number, "x") for r in crl] == [row["serial"]]
