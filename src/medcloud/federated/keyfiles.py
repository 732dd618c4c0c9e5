"""Where a party's key files live (`KeyPaths`) and how one is read or written.

Two folders per party: `site_dir` (secret, never copied off the site, files mode 0600) and
`public_dir` (public material the hub relays between sites and hands to the aggregator). The
key ceremony (`keys`) writes them; every HE scheme's spec (`he.registry`) reads them to build its
backends, so this module sits below both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medcloud.errors import NotFound
from medcloud.fsio import write_atomic

__all__ = ["KeyPaths", "read_key", "write_key"]


@dataclass(frozen=True)
class KeyPaths:
    site: str
    site_dir: Path
    public_dir: Path

    @property
    def identity_key(self) -> Path:
        return self.site_dir / "identity.x25519"

    def identity_pub(self, site: str | None = None) -> Path:
        return self.public_dir / f"identity-{site or self.site}.x25519.pub"

    def shared_secret(self, mode: str = "ckks") -> Path:
        """The key the sites share in a shared-key mode (ckks, aes)."""
        return self.site_dir / f"{mode}.secret"

    def shared_public(self, mode: str = "ckks") -> Path:
        return self.public_dir / f"{mode}.public"

    def shared_sealed(self, site: str, mode: str = "ckks") -> Path:
        return self.public_dir / f"{mode}.sealed-{site}"

    @property
    def ckks_secret(self) -> Path:
        return self.shared_secret("ckks")

    @property
    def ckks_public(self) -> Path:
        return self.shared_public("ckks")

    def ckks_sealed(self, site: str) -> Path:
        return self.shared_sealed(site, "ckks")

    @property
    def threshold_context(self) -> Path:
        return self.public_dir / "threshold.context"

    @property
    def threshold_parties(self) -> Path:
        return self.public_dir / "threshold.parties.json"

    def threshold_pk(self, index: int) -> Path:
        return self.public_dir / f"threshold.pk-{index}"

    @property
    def threshold_joint(self) -> Path:
        return self.public_dir / "threshold.joint.pk"

    @property
    def threshold_share(self) -> Path:
        return self.site_dir / "threshold.share"

    @property
    def threshold_t(self) -> Path:
        return self.public_dir / "threshold.t.json"

    def threshold_sealed_share(self, of: str, holder: str) -> Path:
        """`of`'s key, Shamir share for `holder`, sealed to `holder`."""
        return self.public_dir / f"threshold.keyshare-{of}-for-{holder}.sealed"

    def threshold_release(self, of: str, holder: str, to: str) -> Path:
        """`holder`'s share of `of`'s key, re-sealed to the recovering site `to`."""
        return self.public_dir / f"threshold.release-{of}-from-{holder}-to-{to}.sealed"

    def threshold_recovered(self, of: str) -> Path:
        return self.site_dir / f"threshold.recovered-{of}.share"


def read_key(path: Path, what: str) -> bytes:
    """The bytes of one key file; `NotFound` naming `what` (and usually the command that makes it)."""
    if not path.is_file():
        raise NotFound(f"{what} not found at {path}")
    return path.read_bytes()


def write_key(path: Path, data: bytes, secret: bool = False) -> None:
    """Write one key file whole (a crash leaves the old file or the new one): 0600 if `secret`, else 0644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, mode=0o600 if secret else 0o644)
