"""The OpenFHE sidecar: `python -m medcloud.federated.he.bridge_worker` under CPython 3.10.

Started by `medcloud.federated.he.bridge.ThresholdBridge`; reads requests from stdin and writes
answers to stdout in the bridge's framing (see `bridge.py`), until stdin closes. File descriptor 1
is pointed at stderr once the protocol stream has its own copy, so that a stray print (Python's or
OpenFHE's C++) can never corrupt the stream. A thread exits the process if its parent goes away
while the pipe stays open (inherited by some other process).

Requests (`op`): `init` (blobs: context, joint public key, [secret share]; `lead`), `ping`,
`encrypt` (blob: float64 little-endian values), `sum` (blobs: serialized ciphertexts), `mul`
(`scalar`), `partial`, `decrypt`, `fuse` (blobs: partial decryptions; answer: float64 values),
`describe`, `keygen` (one site's `keys.threshold_keygen`, no backend needed), and `release` /
`recover` (`keys.threshold_release` / `keys.threshold_recover`, t-of-N dropouts).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from medcloud.federated.he.base import HEError
from medcloud.federated.he.bridge import read_message, widen_pipe, write_message
from medcloud.federated.keys import KeyPaths, threshold_keygen, threshold_recover, threshold_release


def _watch_parent(interval: float = 1.0) -> None:
    parent = os.getppid()
    while True:
        time.sleep(interval)
        if os.getppid() != parent:  # re-parented: whoever started us is gone
            os._exit(0)


class Worker:
    def __init__(self) -> None:
        self.backend: Any = None

    def _backend(self) -> Any:
        if self.backend is None:
            raise HEError("the OpenFHE sidecar was not given its keys (no init request)")
        return self.backend

    def handle(self, header: dict[str, Any], blobs: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
        op = header.get("op")
        if op == "keygen":
            return self._keygen(header), []
        if op in ("release", "recover"):
            paths = KeyPaths(str(header["site"]), Path(header["site_dir"]), Path(header["public_dir"]))
            missing = str(header["missing"])
            if op == "release":
                return {"done": threshold_release(paths, missing, str(header["to"]))}, []
            return {"done": threshold_recover(paths, missing)}, []
        if op == "init":
            # OpenFHE is imported once `main` has pointed fd 1 away: nothing its C++ prints while
            # loading can reach the protocol stream.
            from medcloud.federated.he.threshold import ThresholdBackend

            if len(blobs) not in (2, 3):
                raise ValueError("init takes a context, a joint public key and optionally a key share")
            share = blobs[2] if len(blobs) == 3 else None
            self.backend = ThresholdBackend(blobs[0], blobs[1], share, lead=bool(header.get("lead", False)))
            return self._info(), []
        be = self._backend()
        if op == "ping":
            return self._info(), []
        if op == "encrypt":
            values = np.frombuffer(blobs[0], dtype="<f8")
            return {}, [be.serialize(be.encrypt(values))]
        if op == "sum":
            return {}, [be.sum_serialized(blobs)]
        if op == "mul":
            return {}, [be.serialize(be.mul_scalar(be.deserialize(blobs[0]), float(header["scalar"])))]
        if op == "partial":
            return {}, [be.partial_decrypt(be.deserialize(blobs[0]))]
        if op == "decrypt":
            out = be.decrypt(be.deserialize(blobs[0]))
            return {}, [np.asarray(out, dtype="<f8").tobytes()]
        if op == "fuse":
            return {}, [np.asarray(be.fuse(list(blobs)), dtype="<f8").tobytes()]
        if op == "describe":
            return {"describe": be.describe()}, []
        raise ValueError(f"unknown bridge request {op!r}")

    def _info(self) -> dict[str, Any]:
        import openfhe  # loaded by `init` already (see there)

        be = self._backend()
        return {
            "slots": int(be.slots),
            "holds_share": bool(be.holds_share),
            "python": sys.version.split()[0],
            "openfhe": str(getattr(openfhe, "__version__", "")),
            "pid": os.getpid(),
        }

    @staticmethod
    def _keygen(header: dict[str, Any]) -> dict[str, Any]:
        paths = KeyPaths(str(header["site"]), Path(header["site_dir"]), Path(header["public_dir"]))
        t = header.get("threshold")
        done = threshold_keygen(paths, [str(p) for p in header["parties"]], None if t is None else int(t))
        return {"done": done}


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    worker = Worker()
    while True:
        try:
            msg = read_message(inp)
        except (EOFError, ValueError) as exc:
            print(f"bridge_worker: bad request stream ({exc}); exiting", file=sys.stderr)
            return
        if msg is None:
            return  # stdin closed: the parent is done (or gone)
        header, blobs, _ = msg
        t0 = time.perf_counter()
        try:
            reply, answer = worker.handle(header, blobs)
            reply = {**reply, "ok": True, "busy": round(time.perf_counter() - t0, 6)}
        except Exception as exc:
            reply, answer = {"ok": False, "error": type(exc).__name__, "message": str(exc)}, []
        try:
            write_message(out, reply, answer)
        except (BrokenPipeError, OSError):
            return


def main() -> int:
    inp = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    out = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    widen_pipe(out.fileno())
    os.dup2(2, 1)  # anything printed from here on goes to stderr, not into the protocol stream
    sys.stdout = sys.stderr
    threading.Thread(target=_watch_parent, name="parent-watch", daemon=True).start()
    serve(inp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
