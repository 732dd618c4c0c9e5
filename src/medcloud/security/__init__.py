"""Security: identities and tokens, the policy (who may do what on which project), the audit trail.

`tokens` (issuing, verifying, revoking bearer tokens) is not re-exported here: it stores tokens through
`medcloud.store`, which itself imports `security.audit`, so importing it from this face would loop.
"""

from medcloud.security.audit import AuditSeal, ChainReport, canonical_detail, chain_hash, verify_chain
from medcloud.security.policy import Permission, Principal, Role

__all__ = [
    "AuditSeal",
    "ChainReport",
    "Permission",
    "Principal",
    "Role",
    "canonical_detail",
    "chain_hash",
    "verify_chain",
]
