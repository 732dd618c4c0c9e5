"""Threshold mode from any interpreter: OpenFHE in a CPython 3.10 sidecar process.

OpenFHE's PyPI wheel imports only on CPython 3.10, Flower 1.41 and Ray need 3.11. `ThresholdBridge`
is an `HEBackend` for the 3.11 side: it starts one long-lived child, a 3.10 interpreter running
`python -m medcloud.federated.he.bridge_worker`, which builds a real `ThresholdBackend` from the
same key material and answers requests. Ciphertexts stay opaque bytes on this side (a
`Ciphertext` whose single chunk is the serialized frame), so encrypt -> serialize ->
sum_serialized -> partial_decrypt -> fuse travel as bytes and the child does every OpenFHE call.

Wire (the child's stdin and stdout): each message is a 4-byte big-endian header length, a JSON
header (`op` or `ok`, the arguments, and `sizes`: the byte length of each blob), then the blobs.
No pickle. An exception in the child comes back as `{"ok": false, "error": <class name>,
"message": ...}` and is raised here as the same class: medcloud's (`HEError`, `NoSecretKey`,
`InvalidInput`, ...) with the same message, a built-in one (`ValueError`, ...) marked as the
sidecar's; any other becomes an `HEError` naming it. A child that dies mid-request is an `HEError`.

Lifetime: the child exits when its stdin closes (this process exits, or `close()`), and polls its
parent id in case the pipe was inherited elsewhere; `close()` also runs at exit and when the
bridge is garbage-collected. Requests are serialised by a lock (one child, one request at a
time). A process forked after the child was started gets a child of its own on first use.

Which interpreter: `$MEDCLOUD_PY310` if set (it must import openfhe), else `.venv310/bin/python`
in the source checkout this package was imported from (`make test-py310` builds it), else
`python3.10` on PATH if it can import openfhe and numpy; none: `ConfigError`.

Its length: both ends of one wire format (frames, errors, the child's lifetime) are kept together so
they cannot drift apart.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import IO, Any

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

from medcloud import errors
from medcloud.errors import ConfigError, MedcloudError
from medcloud.federated import keys, threshold_chain
from medcloud.federated.he.base import (
    Ciphertext,
    FloatVector,
    HEBackend,
    HEError,
    NoSecretKey,
    encryptable,
    split_header,
)
from medcloud.federated.he.registry import BackendSpec, KeygenStep, register
from medcloud.federated.keyfiles import KeyPaths, read_key

ENV_PY310 = "MEDCLOUD_PY310"
WORKER_MODULE = "medcloud.federated.he.bridge_worker"
MAX_HEADER = 16 * 2**20
INSTALL_HINT = (
    "threshold mode needs OpenFHE, whose PyPI wheel imports only on CPython 3.10: build the repo's "
    "`.venv310` (`make test-py310`: openfhe==1.6.1.0.22.4, numpy, cryptography, the project --no-deps), "
    f"or point {ENV_PY310} at a CPython 3.10 that has `openfhe` and `numpy` installed and can import medcloud"
)


# --- framing (shared with the worker) ------------------------------------------------------------


def write_message(out: IO[bytes], header: dict[str, Any], blobs: Sequence[bytes | memoryview] = ()) -> int:
    """One message: header length, JSON header (with the blob sizes), the blobs; returns its size."""
    head = json.dumps({**header, "sizes": [memoryview(b).nbytes for b in blobs]}).encode()
    out.write(struct.pack(">I", len(head)))
    out.write(head)
    total = 4 + len(head)
    for b in blobs:
        out.write(b)
        total += memoryview(b).nbytes
    out.flush()
    return total


def _read_exact(inp: IO[bytes], n: int) -> bytes:
    data = inp.read(n)  # a buffered reader reads until n bytes or end of stream, into one bytes object
    if data is None or len(data) < n:
        raise EOFError(f"stream ended after {len(data or b'')} of {n} bytes")
    return data


def widen_pipe(fd: int, size: int = 1 << 20) -> None:
    """Linux: a 1 MiB pipe buffer instead of 64 KiB (fewer context switches per ciphertext)."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if setsize is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setsize, size)


def read_message(inp: IO[bytes]) -> tuple[dict[str, Any], list[bytes], int] | None:
    """The next message (header, blobs, its size in bytes), or None at a clean end of stream."""
    first = inp.read(4)
    if not first:
        return None
    if len(first) < 4:
        raise EOFError(f"stream ended after {len(first)} of 4 bytes")
    (head_len,) = struct.unpack(">I", first)
    if head_len > MAX_HEADER:
        raise EOFError(f"bridge header of {head_len} bytes: not a bridge stream")
    header = json.loads(_read_exact(inp, head_len))
    if not isinstance(header, dict):
        raise EOFError("bridge header is not a JSON object")
    sizes = [int(s) for s in header.get("sizes", [])]
    return header, [_read_exact(inp, s) for s in sizes], 4 + head_len + sum(sizes)


def error_class(name: str) -> type[Exception] | None:
    """The exception class a child's error name stands for: a medcloud error or a built-in one
    (None: anything else)."""
    known: dict[str, type[Exception]] = {"HEError": HEError, "NoSecretKey": NoSecretKey}
    for key, value in vars(errors).items():
        if isinstance(value, type) and issubclass(value, MedcloudError):
            known.setdefault(key, value)
    if name in known:
        return known[name]
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        return builtin
    return None


# --- finding the interpreter --------------------------------------------------------------------


def _source_root() -> Path | None:
    """The `src` folder this package was imported from, when it is a source checkout."""
    pkg = Path(__file__).resolve().parents[3]  # .../src/medcloud/federated/he/bridge.py -> .../src
    return pkg if (pkg / "medcloud").is_dir() and (pkg.parent / "pyproject.toml").is_file() else None


def child_env() -> dict[str, str]:
    """The child's environment: this one, with PYTHONPATH holding only the source checkout (a 3.11
    PYTHONPATH, e.g. Ray's, would make the 3.10 child import 3.11 extension modules)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    src = _source_root()
    if src is not None:
        env["PYTHONPATH"] = str(src)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@cache
def _probe(python: str) -> str:
    """'' when `python` is CPython 3.10 with openfhe, numpy and medcloud; else why not."""
    code = (
        "import sys, openfhe, numpy, medcloud.federated.he.threshold;"
        "assert sys.version_info[:2] == (3, 10), sys.version"
    )
    try:
        run = subprocess.run(
            [python, "-c", code], env=child_env(), capture_output=True, timeout=120, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if run.returncode == 0:
        return ""
    lines = run.stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"exit status {run.returncode}"


@cache
def find_python310() -> str:
    """The interpreter the sidecar runs (see the module docstring); `ConfigError` if none works."""
    explicit = os.environ.get(ENV_PY310)
    if explicit:
        why = _probe(explicit)
        if why:
            raise ConfigError(f"{ENV_PY310}={explicit} cannot run the OpenFHE sidecar ({why}); {INSTALL_HINT}")
        return explicit
    tried: list[str] = []
    src = _source_root()
    candidates = [str(src.parent / ".venv310" / "bin" / "python")] if src is not None else []
    on_path = shutil.which("python3.10")
    if on_path:
        candidates.append(on_path)
    for python in candidates:
        if not Path(python).exists():
            tried.append(f"{python}: not found")
            continue
        why = _probe(python)
        if not why:
            return python
        tried.append(f"{python}: {why}")
    if not on_path:
        tried.append("python3.10: not on PATH")
    raise ConfigError(f"no CPython 3.10 with OpenFHE found ({'; '.join(tried)}); {INSTALL_HINT}")


@cache
def openfhe_importable() -> bool:
    """True where this interpreter itself can use OpenFHE (then no sidecar is needed)."""
    try:
        import openfhe  # noqa: F401
    except ImportError:
        return False
    return True


def sidecar_available() -> str:
    """'' when a sidecar can be started here; else the reason (for test skips and messages)."""
    try:
        find_python310()
    except ConfigError as exc:
        return str(exc)
    return ""


# --- the child process --------------------------------------------------------------------------


def _stop(proc: subprocess.Popen[bytes], owner: int) -> None:
    """Close the child's stdin (it exits at end of input), wait briefly, then kill it."""
    if os.getpid() != owner:
        return  # a forked copy: the child belongs to the process that started it
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


class Sidecar:
    """One 3.10 child answering requests; `request` is thread-safe. `init` (a request) is sent to
    every child this object starts, before anything else: a crashed or forked-away child is
    replaced by a new one that loads the same keys."""

    def __init__(self, python: str | None = None, init: tuple[dict[str, Any], Sequence[bytes]] | None = None) -> None:
        self.python = python or find_python310()
        self._init = init
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = 0
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self.init_reply: dict[str, Any] = {}
        self.calls = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.busy_seconds = 0.0  # time the child spent on the requests themselves

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _live(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._owner != os.getpid():
            self._proc, self._finalizer = None, None  # forked: leave the parent's child alone
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            self.close_locked()
        proc = subprocess.Popen(
            [self.python, "-m", WORKER_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the child's log lines go where ours go
            env=child_env(),
            close_fds=True,
        )
        self._proc, self._owner = proc, os.getpid()
        self._finalizer = weakref.finalize(self, _stop, proc, self._owner)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                widen_pipe(pipe.fileno())
        if self._init is not None:
            try:
                self.init_reply = self._exchange(proc, *self._init)[0]
            except BaseException:
                self.close_locked()  # a child that did not load the keys must not answer later
                raise
        return proc

    def _exchange(
        self, proc: subprocess.Popen[bytes], header: dict[str, Any], blobs: Sequence[bytes | memoryview]
    ) -> tuple[dict[str, Any], list[bytes]]:
        assert proc.stdin is not None and proc.stdout is not None
        reply: tuple[dict[str, Any], list[bytes], int] | None = None
        try:
            self.bytes_sent += write_message(proc.stdin, header, blobs)
            reply = read_message(proc.stdout)
            why = "no reply"
        except (OSError, EOFError, ValueError) as exc:
            why = str(exc)
        if reply is None:
            try:
                rc = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                rc = None
            self.close_locked()
            raise HEError(
                f"the OpenFHE sidecar ({self.python}) ended during '{header.get('op')}' "
                f"({why}; exit status {rc}); see its messages above"
            )
        self.calls += 1
        head, out, size = reply
        self.bytes_received += size
        self.busy_seconds += float(head.get("busy", 0.0))
        if not head.get("ok"):
            name, message = str(head.get("error", "HEError")), str(head.get("message", ""))
            cls = error_class(name)
            if cls is None:
                raise HEError(f"{name} in the OpenFHE sidecar: {message}")
            if issubclass(cls, MedcloudError):
                raise cls(message)  # a refusal: same class, same message as in-process
            try:
                err = cls(f"{message} (in the OpenFHE sidecar)")  # a built-in error: most likely a bug
            except TypeError:  # one whose constructor wants more than a message
                err = HEError(f"{name} in the OpenFHE sidecar: {message}")
            raise err
        return head, out

    def request(
        self, header: dict[str, Any], blobs: Sequence[bytes | memoryview] = ()
    ) -> tuple[dict[str, Any], list[bytes]]:
        """Send one request, wait for its answer; raise the child's error as its medcloud class."""
        with self._lock:
            return self._exchange(self._live(), header, blobs)

    def close_locked(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # runs _stop once
        self._proc, self._finalizer = None, None

    def close(self) -> None:
        """Stop the child (it is restarted by the next request)."""
        with self._lock:
            self.close_locked()


# --- the backend --------------------------------------------------------------------------------


class ThresholdBridge(HEBackend):
    """`ThresholdBackend` with OpenFHE in a CPython 3.10 sidecar (same constructor, same results).

    The aggregator's bridge is given no secret share: its child holds public material only and
    refuses partial decryption with `NoSecretKey`, as an in-process `ThresholdBackend` does.
    `deserialize` checks the frame here (magic, sizes, backend) and keeps the bytes; OpenFHE reads
    them, and refuses corrupt ones with `HEError`, when they are used.
    """

    name = "threshold"

    def __init__(
        self,
        context_bytes: bytes,
        joint_public_key: bytes,
        secret_share: bytes | None = None,
        lead: bool = False,
        python: str | None = None,
    ) -> None:
        blobs = [context_bytes, joint_public_key] + ([secret_share] if secret_share is not None else [])
        self.sidecar = Sidecar(python, ({"op": "init", "lead": lead}, blobs))
        info = self.sidecar.request({"op": "ping"})[0]
        self._slots = int(info["slots"])
        self._holds_share = bool(info["holds_share"])

    def _call(
        self, header: dict[str, Any], blobs: Sequence[bytes | memoryview] = ()
    ) -> tuple[dict[str, Any], list[bytes]]:
        return self.sidecar.request(header, blobs)

    def close(self) -> None:
        """Stop the sidecar now (a later call starts a new one)."""
        self.sidecar.close()

    def __enter__(self) -> ThresholdBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError("a ThresholdBridge owns a process and cannot be pickled; build one where it is used")

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def can_decrypt(self) -> bool:
        return False

    @property
    def holds_share(self) -> bool:
        return self._holds_share

    def _blob(self, ct: Ciphertext) -> bytes:
        self._check(ct)
        if len(ct.chunks) != 1 or not isinstance(ct.chunks[0], bytes | bytearray | memoryview):
            raise HEError("a bridged threshold ciphertext is one serialized frame")
        return bytes(ct.chunks[0])

    def encrypt(self, vector: Any) -> Ciphertext:
        flat = encryptable(vector)
        _, out = self._call({"op": "encrypt"}, [flat.astype("<f8", copy=False).data])
        return Ciphertext(self.name, int(flat.size), [out[0]])

    def serialize(self, ct: Ciphertext) -> bytes:
        return self._blob(ct)

    def deserialize(self, data: bytes) -> Ciphertext:
        header, _ = split_header(bytes(data), copy=False)  # the header only: no blob copies
        if header["backend"] != self.name:
            raise HEError(f"ciphertext was made by backend '{header['backend']}', this is '{self.name}'")
        return Ciphertext(self.name, int(header["length"]), [bytes(data)])

    def sum_serialized(self, blobs: Sequence[bytes]) -> bytes:
        if not blobs:
            raise HEError("nothing to sum")
        return self._call({"op": "sum"}, list(blobs))[1][0]

    def add(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        return self.sum([a, b])

    def sum(self, cts: Sequence[Ciphertext]) -> Ciphertext:
        if not cts:
            raise HEError("nothing to sum")
        lengths = {ct.length for ct in cts}
        blobs = [self._blob(ct) for ct in cts]
        if len(lengths) != 1:
            raise HEError(f"length mismatch: {sorted(lengths)}")
        return Ciphertext(self.name, cts[0].length, [self.sum_serialized(blobs)])

    def mul_scalar(self, a: Ciphertext, scalar: float) -> Ciphertext:
        _, out = self._call({"op": "mul", "scalar": float(scalar)}, [self._blob(a)])
        return Ciphertext(self.name, a.length, [out[0]])

    def decrypt(self, ct: Ciphertext) -> FloatVector:
        self._call({"op": "decrypt"}, [self._blob(ct)])  # the child refuses: NoSecretKey
        raise NoSecretKey("threshold decryption needs the partial decryptions of all parties")

    def partial_decrypt(self, ct: Ciphertext) -> bytes:
        """This party's decryption share of `ct` (made in the child, with the share it holds)."""
        return self._call({"op": "partial"}, [self._blob(ct)])[1][0]

    def fuse(self, shares: list[bytes]) -> FloatVector:
        """Combine the partial decryptions of all parties into the plaintext vector."""
        if not shares:
            raise HEError("no decryption shares")
        _, out = self._call({"op": "fuse"}, list(shares))
        return np.frombuffer(out[0], dtype="<f8").astype(np.float64)

    def describe(self) -> dict[str, Any]:
        head, _ = self._call({"op": "describe"})
        return dict(head["describe"])

    def ping(self) -> dict[str, Any]:
        """A no-op round trip (the per-call overhead); the child's interpreter and slots."""
        return self._call({"op": "ping"})[0]

    # The chunk hooks of `HEBackend` are not used: every operation above works on whole frames.
    def _encrypt_chunk(self, values: FloatVector) -> Any:
        raise HEError("the bridge encrypts whole vectors")

    def _decrypt_chunk(self, chunk: Any, length: int) -> FloatVector:
        raise NoSecretKey("threshold decryption needs the partial decryptions of all parties")

    def _add_chunk(self, a: Any, b: Any) -> Any:
        raise HEError("the bridge adds whole frames")

    def _mul_chunk(self, a: Any, scalar: float) -> Any:
        raise HEError("the bridge multiplies whole frames")

    def _chunk_to_bytes(self, chunk: Any) -> bytes:
        return bytes(chunk)

    def _chunk_from_bytes(self, data: bytes) -> Any:
        return bytes(data)


def threshold_backend(
    context_bytes: bytes, joint_public_key: bytes, secret_share: bytes | None = None, lead: bool = False
) -> HEBackend:
    """An in-process `ThresholdBackend` where OpenFHE imports, else a `ThresholdBridge`."""
    if openfhe_importable():
        from medcloud.federated.he.threshold import ThresholdBackend

        return ThresholdBackend(context_bytes, joint_public_key, secret_share, lead=lead)
    return ThresholdBridge(context_bytes, joint_public_key, secret_share, lead=lead)


def threshold_keygen(paths: KeyPaths, parties: list[str], threshold: int | None = None) -> list[str]:
    """`keys.threshold_keygen` for this site, run in a CPython 3.10 child (where OpenFHE is not
    importable here); same files written, same lines returned, same errors raised."""
    if openfhe_importable():
        return keys.threshold_keygen(paths, parties, threshold)
    sidecar = Sidecar()
    try:
        head, _ = sidecar.request(
            {
                "op": "keygen",
                "site": paths.site,
                "site_dir": str(paths.site_dir),
                "public_dir": str(paths.public_dir),
                "parties": list(parties),
                "threshold": threshold,
            }
        )
    finally:
        sidecar.close()
    return [str(x) for x in head["done"]]


def _in_child(paths: KeyPaths, op: str, **fields: Any) -> list[str]:
    sidecar = Sidecar()
    try:
        head, _ = sidecar.request(
            {
                "op": op,
                "site": paths.site,
                "site_dir": str(paths.site_dir),
                "public_dir": str(paths.public_dir),
                **fields,
            }
        )
    finally:
        sidecar.close()
    return [str(x) for x in head["done"]]


def threshold_release(paths: KeyPaths, missing: str, to: str) -> list[str]:
    """`keys.threshold_release`, in a CPython 3.10 child where OpenFHE is not importable here."""
    if openfhe_importable():
        return keys.threshold_release(paths, missing, to)
    return _in_child(paths, "release", missing=missing, to=to)


def threshold_recover(paths: KeyPaths, missing: str) -> list[str]:
    """`keys.threshold_recover`, in a CPython 3.10 child where OpenFHE is not importable here."""
    if openfhe_importable():
        return keys.threshold_recover(paths, missing)
    return _in_child(paths, "recover", missing=missing)


# --- the threshold scheme, as the registry sees it ----------------------------------------------
# Registered here rather than in `threshold.py`: this module imports on every interpreter and picks
# OpenFHE in process or in the sidecar; `threshold.py` imports only where `openfhe` does.


def _is_lead(paths: KeyPaths, site: str) -> bool:
    parties = json.loads(read_key(paths.threshold_parties, "party list"))
    return bool(parties[0] == site)


def site_threshold_backend(paths: KeyPaths) -> HEBackend:
    """A site's threshold backend: its key share, in process or in the sidecar; only once the whole
    signed key chain checks out with the fingerprints this site confirmed (`threshold_chain`)."""
    threshold_chain.check_site(paths)
    return threshold_backend(
        read_key(paths.threshold_context, "threshold context"),
        read_key(paths.threshold_joint, "joint public key"),
        read_key(paths.threshold_share, "key share"),
        lead=_is_lead(paths, paths.site),
    )


def aggregator_threshold_backend(public_dir: Path) -> HEBackend:
    """The aggregator's: public material only, in process or in the sidecar; neither can decrypt.
    The chain it reads must be complete and consistently signed (`threshold_chain.check_aggregator`)."""
    threshold_chain.check_aggregator(public_dir)
    return threshold_backend(
        read_key(public_dir / "threshold.context", "threshold context"),
        read_key(public_dir / "threshold.joint.pk", "joint public key"),
    )


def recovered_backend(paths: KeyPaths, missing: str) -> HEBackend:
    """On the recovering site: a backend that makes `missing`'s partial decryptions from the key
    share `keys.threshold_recover` rebuilt (the signed chain checked first)."""
    threshold_chain.check_site(paths)
    return threshold_backend(
        read_key(paths.threshold_context, "threshold context"),
        read_key(paths.threshold_joint, "joint public key"),
        read_key(paths.threshold_recovered(missing), f"recovered key share of {missing} (run threshold_recover)"),
        lead=_is_lead(paths, missing),
    )


def keygen_step(paths: KeyPaths, step: KeygenStep) -> list[str]:
    """One site's `medcloud fl keygen --mode threshold` run: its link in the key chain, or (with
    `dropped`) its part in rebuilding a dropped site's key share."""
    if step.dropped:
        if not step.recoverer:
            raise ConfigError("--dropped needs --recoverer (the site that rebuilds the dropped site's key)")
        # The recoverer rebuilds the key; every other survivor re-seals its share to the recoverer.
        if paths.site == step.recoverer:
            return keys.threshold_recover(paths, step.dropped)
        return keys.threshold_release(paths, step.dropped, step.recoverer)
    if not step.parties:
        raise ConfigError("--parties is required for threshold mode")
    return threshold_keygen(paths, list(step.parties), step.threshold)


def ceremony(paths: Sequence[KeyPaths]) -> None:
    """Every site's link of an N-of-N key chain, in order, all folders on this machine
    (identities and mutual trust first: `keys.threshold_ceremony`)."""
    keys.threshold_ceremony(paths)


def _unavailable() -> str:
    return "" if openfhe_importable() else sidecar_available()


SPEC = register(
    BackendSpec(
        "threshold",
        "OpenFHE multiparty CKKS: one key share per site; every share (t of N) opens the sum, none alone",
        "joint",
        site_threshold_backend,
        aggregator_threshold_backend,
        keygen=keygen_step,
        ceremony=ceremony,
        for_recovered=recovered_backend,
        supports_deepprotect=False,
        needs_sidecar=lambda: not openfhe_importable(),
        unavailable=_unavailable,
    )
)


__all__ = [
    "ENV_PY310",
    "SPEC",
    "Sidecar",
    "ThresholdBridge",
    "find_python310",
    "openfhe_importable",
    "recovered_backend",
    "sidecar_available",
    "threshold_backend",
    "threshold_keygen",
    "threshold_recover",
    "threshold_release",
]

if __name__ == "__main__":  # pragma: no cover
    sys.exit("run `python -m medcloud.federated.he.bridge_worker` in the 3.10 interpreter instead")
