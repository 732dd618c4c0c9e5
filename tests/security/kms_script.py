"""A small KMS for the tests: the `encryption_kms_command` protocol over stdin/stdout (security.envelope).

    python kms_script.py KEYDIR

KEYDIR holds `<kek id>.key` files (64 hex digits each) and `current` (the id that wraps). A missing key
or a file named `refuse` makes it exit 1, as a KMS that says no. The keys never leave this process.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def main() -> int:
    keydir = Path(sys.argv[1])
    if (keydir / "refuse").exists():
        print("access denied by policy", file=sys.stderr)
        return 1
    req = json.loads(sys.stdin.read())
    current = (keydir / "current").read_text().strip()
    aad = b"kms-test\x00" + str(req.get("context", "")).encode()
    if req["op"] == "current":
        out = {"kek_id": current}
    elif req["op"] == "wrap":
        nonce = os.urandom(12)
        key = bytes.fromhex((keydir / f"{current}.key").read_text().strip())
        wrapped = nonce + AESGCM(key).encrypt(nonce, base64.b64decode(req["key"]), aad)
        out = {"kek_id": current, "wrapped": base64.b64encode(wrapped).decode()}
    elif req["op"] == "unwrap":
        path = keydir / f"{req['kek_id']}.key"
        if not path.exists():
            print(f"no such key {req['kek_id']}", file=sys.stderr)
            return 1
        wrapped = base64.b64decode(req["wrapped"])
        plain = AESGCM(bytes.fromhex(path.read_text().strip())).decrypt(wrapped[:12], wrapped[12:], aad)
        out = {"key": base64.b64encode(plain).decode()}
    else:
        print(f"unknown op {req['op']}", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
