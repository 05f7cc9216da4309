"""MurmurHash2, exactly as nginx's `ngx_murmur_hash2` (used by `split_clients`).

Sticky buckets must agree with `cutover render nginx`, so this is the same 32-bit function:
m = 0x5bd1e995, r = 24, seed 0 (h = 0 ^ len), little-endian 4-byte blocks, tail, final mix.
"""

from __future__ import annotations

from functools import lru_cache
from struct import unpack_from

__all__ = ["BUCKETS", "bucket_of", "murmurhash2"]

BUCKETS = 10_000
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmurhash2(data: bytes) -> int:
    """Return nginx's 32-bit MurmurHash2 of `data` (an unsigned int in 0..2**32-1)."""
    length = len(data)
    h = length & _MASK
    nblocks = length >> 2
    if nblocks:
        for k in unpack_from(f"<{nblocks}I", data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            k = (k * _M) & _MASK
            h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        i = nblocks << 2
        if tail == 3:
            h ^= data[i + 2] << 16
        if tail >= 2:
            h ^= data[i + 1] << 8
        h ^= data[i]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@lru_cache(maxsize=16_384)  # sticky keys repeat; a hit costs far less than hashing
def bucket_of(key: str) -> int:
    """Map a sticky key onto one of 10,000 buckets (0..9999), as `split_clients` does."""
    return (murmurhash2(key.encode()) * BUCKETS) >> 32
