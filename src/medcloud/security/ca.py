"""A small certificate authority the hub's administrator runs for mutual TLS between gateways and hub.

`medcloud hub ca init | issue | revoke | list`. One folder holds everything (`ca_dir`):

    ca.key       the CA's private key (0600; keep it offline once the certificates are issued)
    ca.crt       the CA certificate: the hub's `tls_client_ca_file` and the gateways' `--ca-bundle`
    crl.pem      the certificate revocation list, re-signed at every revocation: the hub's `tls_crl_file`
    index.json   every certificate issued: serial, kind, name, expiry, revocation time
    issued/      a copy of every certificate issued (never a private key)

A site's client certificate names the site in its subject (CN = site id, OU = "medcloud site"): the
hub binds a site's token to the certificate of the same site (`medcloud.security.tls`). Keys are
ECDSA P-256 (default) or RSA-3072, signatures SHA-256: both in CRYPTREC's list of recommended ciphers.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from medcloud.errors import ConfigError, InvalidInput, NotFound
from medcloud.fsio import fsync_dir, write_atomic

__all__ = [
    "CA_CERT",
    "CRL_FILE",
    "OPERATOR_OU",
    "SITE_OU",
    "IssuedCert",
    "ca_certificate",
    "init_ca",
    "issue_certificate",
    "list_certificates",
    "new_key",
    "pem_key",
    "refresh_crl",
    "revoke_certificate",
    "subject_alt_names",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CRL_FILE = "crl.pem"
INDEX = "index.json"
SITE_OU = "medcloud site"
SERVER_OU = "medcloud hub"
OPERATOR_OU = "medcloud operator"
ORG = "medcloud"
KeyType = Literal["ec", "rsa"]
Kind = Literal["server", "site", "operator"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CRL_DAYS = 30


@dataclass
class IssuedCert:
    serial: str  # hex
    kind: str
    name: str
    not_after: str
    revoked_at: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_key(key_type: KeyType) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise InvalidInput(f"key type {key_type!r}: use ec (P-256) or rsa (3072 bits)")


def pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, Any]:
    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    if not cert_path.is_file() or not key_path.is_file():
        raise ConfigError(f"no CA in {ca_dir}: run `medcloud hub ca init --ca-dir {ca_dir}` first")
    mode = key_path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"CA key {key_path} has mode {mode:o}: it must be private to its owner (chmod 600)")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    return cert, key


def _read_index(ca_dir: Path) -> list[IssuedCert]:
    path = ca_dir / INDEX
    if not path.is_file():
        return []
    return [IssuedCert(**row) for row in json.loads(path.read_text(encoding="utf-8"))]


def _write_index(ca_dir: Path, rows: Sequence[IssuedCert]) -> None:
    data = json.dumps([r.as_dict() for r in rows], indent=2).encode()
    write_atomic(ca_dir / INDEX, data, mode=0o644)


def _write_crl(ca_dir: Path, ca_cert: x509.Certificate, ca_key: Any, rows: Sequence[IssuedCert]) -> None:
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=CRL_DAYS))
    )
    for row in rows:
        if row.revoked_at:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(row.serial, 16))
                .revocation_date(dt.datetime.fromisoformat(row.revoked_at))
                .build()
            )
    crl = builder.sign(ca_key, hashes.SHA256())
    write_atomic(ca_dir / CRL_FILE, crl.public_bytes(serialization.Encoding.PEM), mode=0o644)


def ca_certificate(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, subject: x509.Name, *, days: int
) -> x509.Certificate:
    """A self-signed CA certificate (RFC 5280: basicConstraints CA with path length 0, keyUsage
    keyCertSign + cRLSign only, subject key identifier), valid from five minutes ago for `days`.

    The one CA profile of the project: the hub's mTLS CA (`init_ca`) and the Flower pilot CA
    (`federated.certs.write_dev_ca`) are both made here."""
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def init_ca(ca_dir: Path, *, name: str = "medcloud hub CA", key_type: KeyType = "ec", days: int = 3650) -> Path:
    """Create the CA (key, self-signed certificate, empty CRL) in `ca_dir`; refuse to overwrite one."""
    if (ca_dir / CA_KEY).exists():
        raise ConfigError(f"{ca_dir} already holds a CA; refusing to overwrite it")
    ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ca_dir / "issued").mkdir(mode=0o755, exist_ok=True)
    key = new_key(key_type)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG), x509.NameAttribute(NameOID.COMMON_NAME, name)]
    )
    cert = ca_certificate(key, subject, days=days)
    write_atomic(ca_dir / CA_KEY, pem_key(key), mode=0o600, sync_dir=False)
    write_atomic(ca_dir / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), mode=0o644, sync_dir=False)
    _write_index(ca_dir, [])
    _write_crl(ca_dir, cert, key, [])
    fsync_dir(ca_dir)
    return ca_dir / CA_CERT


def subject_alt_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def issue_certificate(
    ca_dir: Path,
    kind: Kind,
    name: str,
    out_dir: Path,
    *,
    hosts: Sequence[str] = (),
    key_type: KeyType = "ec",
    days: int = 397,
    _not_before: dt.datetime | None = None,
) -> tuple[Path, Path, IssuedCert]:
    """Issue a certificate and its key into `out_dir` as NAME.crt / NAME.key (the key 0600).

    `server`: the hub, with `hosts` as subject alternative names (DNS names and IP addresses);
    `site`: a gateway, CN = the site id; `operator`: a person's or tool's client certificate
    that is not a site's (its holder uses a non-site token)."""
    if not _NAME.match(name):
        raise InvalidInput(f"certificate name {name!r}: letters, digits, '.', '_', '-' (at most 64)")
    if kind == "server" and not hosts:
        raise InvalidInput("a server certificate needs at least one --host (DNS name or IP address)")
    ca_cert, ca_key = _load_ca(ca_dir)
    key = new_key(key_type)
    ou = {"server": SERVER_OU, "site": SITE_OU, "operator": OPERATOR_OU}[kind]
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    start = _not_before or _now() - dt.timedelta(minutes=5)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if kind == "server":
        builder = builder.add_extension(subject_alt_names(hosts), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    out_dir.mkdir(parents=True, exist_ok=True)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    crt_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    write_atomic(key_path, pem_key(key), mode=0o600, sync_dir=False)
    write_atomic(crt_path, pem, mode=0o644, sync_dir=False)
    fsync_dir(out_dir)
    serial = format(cert.serial_number, "x")
    write_atomic(ca_dir / "issued" / f"{serial}.crt", pem, mode=0o644)
    row = IssuedCert(serial=serial, kind=kind, name=name, not_after=cert.not_valid_after_utc.isoformat())
    _write_index(ca_dir, [*_read_index(ca_dir), row])
    return crt_path, key_path, row


def list_certificates(ca_dir: Path) -> list[IssuedCert]:
    """Every certificate this CA issued, revoked ones included."""
    _load_ca(ca_dir)
    return _read_index(ca_dir)


def revoke_certificate(ca_dir: Path, who: str, reason: str = "") -> list[IssuedCert]:
    """Revoke by serial (hex) or by name (every unrevoked certificate of that name); re-sign the CRL."""
    ca_cert, ca_key = _load_ca(ca_dir)
    rows = _read_index(ca_dir)
    wanted = who.lower().lstrip("0") or "0"
    hit = [r for r in rows if not r.revoked_at and (r.serial.lstrip("0") == wanted or r.name == who)]
    if not hit:
        raise NotFound(f"no unrevoked certificate with serial or name {who!r}")
    now = _now().isoformat()
    for r in hit:
        r.revoked_at = now
        r.reason = reason or None
    _write_index(ca_dir, rows)
    _write_crl(ca_dir, ca_cert, ca_key, rows)
    return hit


def refresh_crl(ca_dir: Path) -> Path:
    """Re-sign the CRL with a fresh next-update (a hub rejects every client once its CRL has expired)."""
    ca_cert, ca_key = _load_ca(ca_dir)
    _write_crl(ca_dir, ca_cert, ca_key, _read_index(ca_dir))
    return ca_dir / CRL_FILE
