"""Deployment profiles for the hospital network typology (MHLW guideline v6.0): `gateway run --profile`.

Each profile fixes what the gateway may listen on and how it may reach the hub, and refuses a command
line that would break it (docs/deployment-profiles.md has the diagrams):

- `vdi`: closed hospital network; the cloud is reached only from a VDI / secure-browser segment. The
  gateway sits at that segment's edge: it may receive C-STORE on one named hospital-side address (never
  all interfaces), and reaches the hub only through the segment's egress proxy, over mutual TLS.
- `one-way`: isolated segment with a one-way relay (data diode or one-way file transfer). The gateway
  opens no socket at all, neither listening nor to the hub: it de-identifies a watched folder into a
  spool (`--relay-dir`) the relay carries out; `medcloud gateway relay` on the outer side sends it on.
- `sase`: SASE / zero-trust access: no network location is trusted, so every connection is mutual TLS
  with the site's certificate, to an https hub, optionally through the SASE connector's proxy; a
  C-STORE receiver only on loopback or a named address.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, replace
from pathlib import Path

from medcloud.errors import ConfigError

PROFILES = ("vdi", "one-way", "sase")
_ANY = {"0.0.0.0", "::", ""}


@dataclass(frozen=True)
class NetworkChoices:
    """The network-facing options of `gateway run`, before and after a profile is applied."""

    hub_url: str
    dicom_port: int | None = None
    dicom_host: str = "127.0.0.1"
    client_cert: Path | None = None
    client_key: Path | None = None
    ca_bundle: Path | None = None
    proxy: str | None = None
    relay_dir: Path | None = None

    def verify(self) -> bool | str | ssl.SSLContext:
        """What httpx verifies the hub with: a mutual-TLS context when a client certificate is given."""
        if self.client_cert is not None or self.client_key is not None:
            from medcloud.security.tls import client_context

            return client_context(self.ca_bundle, self.client_cert, self.client_key)
        return str(self.ca_bundle) if self.ca_bundle else True


def _require_mtls(name: str, c: NetworkChoices) -> None:
    if not c.hub_url.startswith("https://"):
        raise ConfigError(f"profile {name}: the hub must be an https:// URL")
    if c.client_cert is None or c.client_key is None:
        raise ConfigError(f"profile {name}: mutual TLS is required: give --client-cert and --client-key")


def _named_address(name: str, host: str, *, loopback_only: bool) -> None:
    if host in _ANY:
        raise ConfigError(f"profile {name}: the C-STORE receiver may not bind every interface ({host!r})")
    if loopback_only:
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return  # a host name: the operator named the interface
        if addr.is_unspecified:
            raise ConfigError(f"profile {name}: the C-STORE receiver may not bind every interface")


def apply_profile(name: str | None, c: NetworkChoices) -> NetworkChoices:
    """Check the choices against profile `name` (None: no profile) and return them as the profile sets them."""
    if name is None:
        if c.relay_dir is not None:
            raise ConfigError("--relay-dir belongs to --profile one-way")
        return c
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}: use {', '.join(PROFILES)}")
    if name == "one-way":
        if c.dicom_port is not None:
            raise ConfigError("profile one-way: the gateway listens on nothing; drop --dicom-port (use --watch)")
        if c.relay_dir is None:
            raise ConfigError("profile one-way: give --relay-dir, the spool the one-way relay carries out")
        if c.proxy is not None or c.client_cert is not None:
            raise ConfigError("profile one-way: the gateway makes no connection; --proxy/--client-cert go to the relay")
        c.relay_dir.mkdir(parents=True, exist_ok=True)
        return c
    if c.relay_dir is not None:
        raise ConfigError(f"profile {name}: --relay-dir belongs to profile one-way")
    _require_mtls(name, c)
    if name == "vdi":
        if c.proxy is None:
            raise ConfigError("profile vdi: the hub is reached only through the segment's egress proxy: give --proxy")
        if c.dicom_port is not None:
            _named_address(name, c.dicom_host, loopback_only=False)
        return c
    # sase
    if c.dicom_port is not None:
        _named_address(name, c.dicom_host, loopback_only=True)
    return replace(c)
