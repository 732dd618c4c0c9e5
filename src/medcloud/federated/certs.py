"""A throwaway certificate authority for Flower's TLS (tests, pilots and one-hospital trials), and
the sites' SuperNode authentication keys.

Production federations use the hospital's or the consortium's PKI; this writes the three files
`flower-superlink` needs (`ca.crt`, `server.crt`, `server.key`) for a given set of host names
and addresses, so that a pilot never falls back to `--insecure`. ECDSA P-256, SHA-256.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from medcloud.errors import ConfigError
from medcloud.fsio import fsync_dir, write_atomic
from medcloud.security.ca import ca_certificate, new_key, pem_key, subject_alt_names

__all__ = [
    "SUPERNODE_KEY",
    "SUPERNODE_PUB",
    "check_private_key_file",
    "read_supernode_public_key",
    "supernode_fingerprint",
    "write_dev_ca",
    "write_supernode_key",
]


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "medcloud FL"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def write_dev_ca(out: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost"), days: int = 30) -> dict[str, Path]:
    """Write ca.crt (+ ca.key), server.crt and server.key for `hosts` under `out`; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = new_key("ec")
    ca_name = _name("medcloud FL test CA")
    ca_cert = ca_certificate(ca_key, ca_name, days=days)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(subject_alt_names(hosts), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {
        "ca.crt": out / "ca.crt",
        "ca.key": out / "ca.key",
        "server.crt": out / "server.crt",
        "server.key": out / "server.key",
    }
    pem = serialization.Encoding.PEM
    blobs = {
        "ca.crt": (ca_cert.public_bytes(pem), 0o644),
        "ca.key": (pem_key(ca_key), 0o600),
        "server.crt": (srv_cert.public_bytes(pem), 0o644),
        "server.key": (pem_key(srv_key), 0o600),
    }
    for name, (data, mode) in blobs.items():
        write_atomic(paths[name], data, mode=mode, sync_dir=False)
    fsync_dir(out)  # once for the four files
    return paths


# --- SuperNode authentication keys --------------------------------------------------------------
#
# With `flower-superlink --enable-supernode-auth`, the SuperLink admits only SuperNodes whose public
# key an operator registered through its Control API (`flwr supernode register`); each Fleet request
# is signed with the node's private key. Flower reads the private key as an OpenSSH ECDSA key and the
# public key as one OpenSSH line on a NIST curve; P-384, as `flwr` itself generates.

SUPERNODE_KEY = "supernode-auth.key"
SUPERNODE_PUB = "supernode-auth.pub"
_COMMENT_PREFIX = "medcloud-site:"
_NIST_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def supernode_fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """OpenSSH-style fingerprint (`SHA256:...`, as `ssh-keygen -l` prints) to compare out of band."""
    line = public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    digest = hashlib.sha256(base64.b64decode(line.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def check_private_key_file(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load a SuperNode private key, refusing one that group or others may read (as ssh does)."""
    if not path.is_file():
        raise ConfigError(f"no SuperNode key at {path}: run `medcloud fl site-key` first")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"SuperNode key {path} has mode {mode:o}: it must be private to its owner (chmod 600)")
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not an unencrypted OpenSSH private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, _NIST_CURVES):
        raise ConfigError(f"{path}: SuperNode keys are ECDSA on a NIST curve (P-256/384/521)")
    return key


def write_supernode_key(
    site_dir: Path, site: str, public_out: Path | None = None, rotate: bool = False
) -> tuple[Path, Path, str, bool]:
    """This site's SuperNode key pair: the private key stays in `site_dir` (0600), the public key
    (one OpenSSH line, comment `medcloud-site:SITE`) goes to `public_out` (default next to it).

    Idempotent: an existing key is kept (re-enrollment is needed only after `rotate`).
    Returns (private key path, public key path, fingerprint, whether a new key was made)."""
    if not site or any(c.isspace() or not c.isprintable() for c in site):
        raise ConfigError(f"site name {site!r}: use a non-empty name without spaces")
    site_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path = site_dir / SUPERNODE_KEY
    created = rotate or not key_path.exists()
    if created:
        key = ec.generate_private_key(ec.SECP384R1())
        blob = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        write_atomic(key_path, blob, mode=0o600)
    else:
        key = check_private_key_file(key_path)
    public = key.public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pub_path = public_out if public_out is not None else site_dir / SUPERNODE_PUB
    pub_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(pub_path, line + f" {_COMMENT_PREFIX}{site}\n".encode(), mode=0o644)
    return key_path, pub_path, supernode_fingerprint(public), created


def read_supernode_public_key(path: Path) -> tuple[str, str | None]:
    """Validate a site's SuperNode public key file for enrollment; return (fingerprint, site name
    from the `medcloud-site:` comment, if any). Refuses a file that holds private key material."""
    if not path.is_file():
        raise ConfigError(f"no public key file at {path}")
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        raise ConfigError(
            f"{path} holds a PRIVATE key: enroll the site's public key ({SUPERNODE_PUB}); a private key that "
            "left its site is compromised: make a new one there (`medcloud fl site-key --rotate`)"
        )
    try:
        key = serialization.load_ssh_public_key(data.strip())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not an OpenSSH public key line: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _NIST_CURVES):
        raise ConfigError(f"{path}: SuperNode keys are ECDSA on a NIST curve (P-256/384/521)")
    fields = data.split()
    site = next(
        (f.decode()[len(_COMMENT_PREFIX) :] for f in fields[2:] if f.startswith(_COMMENT_PREFIX.encode())), None
    )
    return supernode_fingerprint(key), site or None
