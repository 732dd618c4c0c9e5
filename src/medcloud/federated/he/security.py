"""128-bit security check against the HomomorphicEncryption.org standard tables.

Albrecht et al., "Homomorphic Encryption Security Standard" (2018), Table 1, ternary (uniform
{-1,0,1}) secret, classical 128-bit: the largest total modulus log2(Q·P) allowed per ring
dimension N. Both TenSEAL (SEAL) and OpenFHE use ternary secrets for CKKS.
"""

from __future__ import annotations

from medcloud.federated.he.base import HEError

MAX_LOG_QP_128: dict[int, int] = {
    1024: 27,
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
}


def check_128_bit(ring_dimension: int, log_qp: float) -> None:
    """Refuse parameters outside the standard's 128-bit classical bound."""
    bound = MAX_LOG_QP_128.get(ring_dimension)
    if bound is None:
        raise HEError(f"ring dimension {ring_dimension} is not in the HE standard table")
    if log_qp > bound:
        raise HEError(
            f"log2(QP)={log_qp:.0f} exceeds {bound}, the 128-bit bound for N={ring_dimension} "
            "(HomomorphicEncryption.org standard, ternary secret)"
        )
