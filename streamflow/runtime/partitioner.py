"""Kafka's default key partitioner (murmur2), so streamflow places keys where Java clients do.

Co-partitioning only works if every producer of a topic agrees on key → partition. The worker
configures librdkafka with ``murmur2_random`` (the Java-compatible partitioner); the in-process
test driver uses this function to route records the same way.
"""

from __future__ import annotations

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """32-bit murmur2 with Kafka's seed, as a signed int (the Java ``Utils.murmur2`` result)."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    rest = length & 3
    tail = 4 * n4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes | None, partitions: int) -> int:
    """The partition Kafka's Java producer (and librdkafka's murmur2) picks for ``key``."""
    if key is None:
        return 0
    return (murmur2(key) & 0x7FFFFFFF) % partitions
