"""TLS for the hub and the gateway: protocol versions, cipher suites, client certificates, site binding.

Versions and suites follow CRYPTREC's "TLS暗号設定ガイドライン" (TLS cipher configuration guideline,
CRYPTREC GL-3001-3.0.1, IPA/NICT, July 2020), high-security type (高セキュリティ型): TLS 1.3 and
TLS 1.2 only, and in TLS 1.2 only ephemeral ECDH key exchange with an AEAD cipher:

    TLS 1.3: TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256, TLS_AES_128_GCM_SHA256
    TLS 1.2: ECDHE-{ECDSA,RSA}-AES128-GCM-SHA256, ECDHE-{ECDSA,RSA}-AES256-GCM-SHA384,
             ECDHE-{ECDSA,RSA}-CHACHA20-POLY1305

(a subset of the guideline's high-security list: its DHE, CCM and Camellia suites are left out, as
no client of ours needs them). Python cannot narrow the TLS 1.3 suites; OpenSSL's three defaults are
the ones above and `tls_status` reports what the context really offers.

Binding a certificate to a site: uvicorn does not hand the client certificate to the app, so the hub's
HTTP protocol (`medcloud.hub.server`) reads it from the TLS transport once per connection and puts it
in the request's ASGI scope as the ASGI TLS extension (`scope["extensions"]["tls"]`), with the
certificate's parsed identity under `"medcloud"`. `check_site_binding` then refuses a site's token that
arrives over another site's certificate, or over no site certificate at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from medcloud.errors import ConfigError, Forbidden

if TYPE_CHECKING:
    from medcloud.config import Settings
    from medcloud.security.policy import Principal

__all__ = [
    "CIPHER_SOURCE",
    "CRYPTREC_TLS12_CIPHERS",
    "PeerIdentity",
    "ServerTLS",
    "check_site_binding",
    "client_context",
    "peer_identity",
    "revoked_serials",
    "server_context",
    "tls_extension",
    "tls_status",
]

CRYPTREC_TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
CIPHER_SOURCE = "CRYPTREC GL-3001-3.0.1 TLS暗号設定ガイドライン (2020-07), high-security type (高セキュリティ型)"
MIN_VERSION = ssl.TLSVersion.TLSv1_2
SITE_OU = "medcloud site"  # as medcloud.security.ca writes it (not imported: the gateway needs no CA code)


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = MIN_VERSION
    ctx.set_ciphers(CRYPTREC_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE


def _need_file(path: Path | str | None, what: str) -> str:
    if path is None or not Path(path).is_file():
        raise ConfigError(f"{what} {path} not found")
    return str(path)


def server_context(
    cert_file: Path | str,
    key_file: Path | str | None,
    client_ca_file: Path | str | None = None,
    crl_file: Path | str | None = None,
) -> ssl.SSLContext:
    """The hub's TLS context: TLS 1.2+, CRYPTREC suites; client certificates required when a CA is given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    try:
        ctx.load_cert_chain(_need_file(cert_file, "TLS certificate"), str(key_file) if key_file else None)
    except ssl.SSLError as exc:
        raise ConfigError(f"cannot load the hub's certificate {cert_file} / key {key_file}: {exc}") from None
    if client_ca_file is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=_need_file(client_ca_file, "client CA file"))
        if crl_file is not None:
            ctx.load_verify_locations(cafile=_need_file(crl_file, "CRL file"))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    elif crl_file is not None:
        raise ConfigError("tls_crl_file needs tls_client_ca_file (a CRL only matters for client certificates)")
    return ctx


@dataclass(frozen=True)
class ServerTLS:
    """uvicorn's `ssl_context_factory` for the hub (a plain dataclass, so it pickles into each worker)."""

    cert_file: str
    key_file: str | None = None
    client_ca_file: str | None = None
    crl_file: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerTLS | None:
        if settings.tls_cert_file is None:
            if settings.tls_client_ca_file is not None:
                raise ConfigError("tls_client_ca_file is set but tls_cert_file is not: mutual TLS needs TLS")
            return None
        return cls(
            cert_file=str(settings.tls_cert_file),
            key_file=str(settings.tls_key_file) if settings.tls_key_file else None,
            client_ca_file=str(settings.tls_client_ca_file) if settings.tls_client_ca_file else None,
            crl_file=str(settings.tls_crl_file) if settings.tls_crl_file else None,
        )

    def __call__(self, config: Any, default_factory: Any) -> ssl.SSLContext:
        return server_context(self.cert_file, self.key_file, self.client_ca_file, self.crl_file)


def client_context(
    ca_file: Path | str | None, cert_file: Path | str | None = None, key_file: Path | str | None = None
) -> ssl.SSLContext:
    """The gateway's context: verifies the hub against `ca_file` (else the system's CAs), presents a
    client certificate when one is given; TLS 1.2+ with the same suites as the hub."""
    ctx = ssl.create_default_context(cafile=_need_file(ca_file, "CA bundle") if ca_file else None)
    _harden(ctx)
    if cert_file is not None:
        try:
            ctx.load_cert_chain(_need_file(cert_file, "client certificate"), str(key_file) if key_file else None)
        except ssl.SSLError as exc:
            raise ConfigError(f"cannot load client certificate {cert_file} / key {key_file}: {exc}") from None
    elif key_file is not None:
        raise ConfigError("a client key was given without its certificate")
    return ctx


@dataclass(frozen=True)
class PeerIdentity:
    """Who a client certificate names: its CN, OU, serial (hex), SHA-256 fingerprint and expiry."""

    common_name: str
    unit: str
    serial: str
    fingerprint: str
    not_after: str
    subject: str

    @property
    def site(self) -> str | None:
        return self.common_name if self.unit == SITE_OU else None


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if len(values) == 1 else ""


def peer_identity(der: bytes) -> PeerIdentity:
    cert = x509.load_der_x509_certificate(der)
    return PeerIdentity(
        common_name=_attr(cert.subject, NameOID.COMMON_NAME),
        unit=_attr(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
        serial=format(cert.serial_number, "x"),
        fingerprint=hashlib.sha256(der).hexdigest(),
        not_after=cert.not_valid_after_utc.isoformat(),
        subject=cert.subject.rfc4514_string(),
    )


_CRL_CACHE: dict[str, tuple[tuple[int, int], frozenset[str]]] = {}
_CRL_LOCK = threading.Lock()


def revoked_serials(crl_file: Path | str) -> frozenset[str]:
    """Serials (hex) the CRL lists, re-read whenever the file changes: a revocation takes effect on the
    next connection without restarting the hub. An unreadable CRL revokes nothing new but keeps the last."""
    path = str(crl_file)
    try:
        st = os.stat(path)
    except OSError:
        return _CRL_CACHE.get(path, ((0, 0), frozenset()))[1]
    stamp = (st.st_mtime_ns, st.st_size)
    with _CRL_LOCK:
        cached = _CRL_CACHE.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            with open(path, "rb") as fh:
                crl = x509.load_pem_x509_crl(fh.read())
        except (OSError, ValueError):
            return cached[1] if cached else frozenset()
        serials = frozenset(format(r.serial_number, "x") for r in crl)
        _CRL_CACHE[path] = (stamp, serials)
        return serials


def tls_extension(transport: Any) -> dict[str, Any] | None:
    """The ASGI TLS extension for a connection (None when it is not TLS); read once per connection."""
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    der = sslobj.getpeercert(binary_form=True)
    cipher = sslobj.cipher()
    ext: dict[str, Any] = {
        "server_cert": None,
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}.get(sslobj.version() or ""),
        "cipher_suite": None,
        "medcloud": {"cipher": cipher[0] if cipher else None, "peer": None},
    }
    if der:
        ident = peer_identity(der)
        ext["client_cert_chain"] = [ssl.DER_cert_to_PEM_cert(der)]
        ext["client_cert_name"] = ident.subject
        ext["medcloud"]["peer"] = ident
    return ext


def peer_of(scope: Any) -> PeerIdentity | None:
    ext = (scope.get("extensions") or {}).get("tls")
    if not ext:
        return None
    peer = ext.get("medcloud", {}).get("peer")
    return peer if isinstance(peer, PeerIdentity) else None


def check_site_binding(scope: Any, principal: Principal, mtls_required: bool) -> None:
    """Refuse a token used over the wrong client certificate (403).

    With mutual TLS on: a site's token must come over that site's certificate, and a site's certificate
    carries only that site's tokens (a stolen token is useless without the site's key, and the reverse)."""
    peer = peer_of(scope)
    if peer is None:
        if mtls_required:
            raise Forbidden("this hub requires a client certificate (mutual TLS)")
        return
    token_site = principal.site if principal.role.value == "site" else None
    if token_site is not None and peer.site != token_site:
        raise Forbidden(
            f"the token of site {token_site!r} came over the client certificate of "
            f"{'site ' + repr(peer.site) if peer.site else repr(peer.common_name)}"
        )
    if peer.site is not None and token_site != peer.site:
        raise Forbidden(f"the client certificate of site {peer.site!r} carries only that site's tokens")


def _cert_summary(path: Path) -> dict[str, Any]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        key_desc = f"EC {key.curve.name}"
    elif isinstance(key, rsa.RSAPublicKey):
        key_desc = f"RSA {key.key_size}"
    else:
        key_desc = type(key).__name__
    try:
        sans = [str(v.value) for v in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
    except x509.ExtensionNotFound:
        sans = []
    left = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    return {
        "file": str(path),
        "subject": cert.subject.rfc4514_string(),
        "key": key_desc,
        "signature": cert.signature_hash_algorithm.name if cert.signature_hash_algorithm else None,
        "not_after": cert.not_valid_after_utc.isoformat(),
        "days_left": round(left.total_seconds() / 86400, 1),
        "sans": sans,
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        "pem_bytes": len(cert.public_bytes(serialization.Encoding.PEM)),
    }


MTLS_OFF = "client certificates are not required (set tls_client_ca_file for mutual TLS)"


def tls_status(settings: Settings) -> dict[str, Any]:
    """Evidence for the self-check: is TLS on, which versions and suites, mutual TLS, certificate expiry,
    and a verdict on encryption in transit (`status`): FAIL when the hub serves plain HTTP or its TLS
    context does not load, WARN on a problem to fix soon (expiry, CRL), else PASS. Mutual TLS being off
    is the self-check's separate item, not this verdict."""
    status = _tls_evidence(settings)
    problems = [p for p in status["problems"] if p != MTLS_OFF]
    if not status["tls"] or status["min_version"] is None:
        status["status"] = "FAIL"
    else:
        status["status"] = "WARN" if problems else "PASS"
    return status


def _tls_evidence(settings: Settings) -> dict[str, Any]:
    """Builds the same context the hub serves with, so a broken file shows up here as a problem."""
    status: dict[str, Any] = {
        "tls": settings.tls_cert_file is not None,
        "mtls": settings.tls_client_ca_file is not None,
        "min_version": None,
        "max_version": None,
        "ciphers": [],
        "cipher_source": CIPHER_SOURCE,
        "server_cert": None,
        "client_ca": None,
        "crl": None,
        "site_binding": settings.tls_client_ca_file is not None,
        "problems": [],
    }
    problems: list[str] = status["problems"]
    if settings.tls_cert_file is None:
        problems.append("the hub serves plain HTTP (set tls_cert_file/tls_key_file, or terminate TLS in front)")
        return status
    try:
        ctx = server_context(
            settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file, settings.tls_crl_file
        )
    except (ConfigError, OSError, ssl.SSLError) as exc:
        problems.append(f"TLS context does not load: {exc}")
        return status
    status["min_version"] = ctx.minimum_version.name
    status["max_version"] = ctx.maximum_version.name
    status["ciphers"] = [c["name"] for c in ctx.get_ciphers()]
    cert = _cert_summary(Path(settings.tls_cert_file))
    status["server_cert"] = cert
    if cert["days_left"] < 30:
        problems.append(f"the hub's certificate expires in {cert['days_left']} days")
    if settings.tls_client_ca_file is not None:
        status["client_ca"] = _cert_summary(Path(settings.tls_client_ca_file))
        if settings.tls_crl_file is not None:
            crl = x509.load_pem_x509_crl(Path(settings.tls_crl_file).read_bytes())
            next_update = crl.next_update_utc
            status["crl"] = {
                "file": str(settings.tls_crl_file),
                "revoked": len(revoked_serials(settings.tls_crl_file)),
                "next_update": next_update.isoformat() if next_update else None,
            }
            if next_update is not None and next_update < dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=7):
                # Past next-update, OpenSSL refuses every client certificate at the handshake.
                problems.append("the CRL expires within 7 days: re-sign it (`medcloud hub ca crl`)")
        else:
            problems.append("mutual TLS without a CRL: a lost gateway certificate cannot be revoked")
    else:
        problems.append(MTLS_OFF)
    return status
