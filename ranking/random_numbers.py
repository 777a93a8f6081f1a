"""Counter-based random numbers and stable hashes, shared by the simulator and the experiment.

Every random draw of the simulator is a hash of what it is for (seed, session, visit round, feed
position, stream), never a draw from a stateful generator: two arms that see the same session see
the same uniforms (common random numbers), whatever else they simulate.
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional

import numpy as np

__all__ = ["splitmix64", "stable_hash", "stream_salt", "uniform_from_hash"]

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_SHIFT_30, _SHIFT_27, _SHIFT_31 = np.uint64(30), np.uint64(27), np.uint64(31)
#: A uint64 keeps its top 53 bits (a double's mantissa) when turned into a uniform.
MANTISSA_SHIFT = np.uint64(11)
#: 2^53: the top 53 bits of a hash divided by it lie in [0, 1).
TWO_POW_53 = 9007199254740992.0
UINT64_MASK = 0xFFFFFFFFFFFFFFFF


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (a bijection with good avalanche)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN_GAMMA
        z = (z ^ (z >> _SHIFT_30)) * _MIX_1
        z = (z ^ (z >> _SHIFT_27)) * _MIX_2
        return z ^ (z >> _SHIFT_31)


def uniform_from_hash(h: np.ndarray) -> np.ndarray:
    """uint64 hashes -> uniforms in (0, 1)."""
    return ((h >> MANTISSA_SHIFT).astype(np.float64) + 0.5) * (1.0 / TWO_POW_53)


def stream_salt(round_: int, stream: int, positions: Optional[np.ndarray] = None) -> np.ndarray:
    """The hashed salt of a visit round and a random stream (and of feed positions, when given)."""
    base = (np.uint64(round_) << np.uint64(24)) | (np.uint64(stream) << np.uint64(16))
    if positions is None:
        return splitmix64(np.array([base], dtype=np.uint64))
    return splitmix64(base | positions.astype(np.uint64))


def stable_hash(*parts: Any) -> int:
    """A 63-bit hash of strings / numbers, stable across processes and machines."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1
