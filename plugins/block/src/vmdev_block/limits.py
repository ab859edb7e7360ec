"""Kata's disk rate limiter, as Cloud Hypervisor's ``RateLimiterConfig`` and Firecracker's
``RateLimiter`` (the same shape: a ``bandwidth`` and an ``ops`` token bucket).

Kata's keys give the bandwidth in bits per second with decimal prefixes in mind (10 Mbit/s is
``10000000``), the VMMs count bytes with binary ones: Kata Go divides by 8 and then scales every
factor of 1000 to 1024 (``utils.RevertBytes``: 10000000 bits/s become 1250000 bytes, then
1304576), for the rate and for its one-time burst alike. Operations are passed as they are. Every
bucket refills in 1000 ms. A bucket whose size comes out 0 is left out, and no limiter at all when
both are (Kata's ``getRateLimiterConfig``); a one-time burst is only set when it is not 0 and its
rate is (Kata ignores a burst without a rate, with a warning: see ``settings.check_rules``).

Where Kata's runtimes differ: Kata Go applies this to Cloud Hypervisor disks only (its Firecracker
driver converts the same way for network interfaces, but sets no drive limiter); runtime-rs
applies it to Cloud Hypervisor and Firecracker disks but passes the numbers unconverted (bits as
bytes) and a configured ``0`` burst as ``one_time_burst: 0``. vmdev follows Kata Go's conversion
on both VMMs, so the key means what Kata's configuration files document (bits per second).
"""

from __future__ import annotations

from typing import Any, Final

from vmdev_block.constants import RATE_LIMITER_REFILL_MS
from vmdev_block.options import BlockSettings

BITS_PER_BYTE: Final = 8
#: the plan note where vmdev follows Kata Go although the configuration is runtime-rs'
RS_RATE_NOTE: Final = (
    "disk_rate_limiter_bw_max_rate, disk_rate_limiter_bw_one_time_burst: converted from bits/s to bytes/s "
    "as Kata Go does (the keys' documented unit); runtime-rs passes the numbers unconverted"
)


def revert_bytes(number: int) -> int:
    """Kata's ``utils.RevertBytes``: every factor of 1000 in ``number`` becomes 1024
    (``10000000`` -> ``10485760``); numbers below 1000 stay as they are."""
    high, low = divmod(number, 1000)
    return number if high == 0 else 1024 * revert_bytes(high) + low


def token_bucket(size: int, one_time_burst: int) -> dict[str, Any]:
    bucket: dict[str, Any] = {"size": size}
    if one_time_burst:
        bucket["one_time_burst"] = one_time_burst
    bucket["refill_time"] = RATE_LIMITER_REFILL_MS
    return bucket


def rate_limiter(config: BlockSettings) -> dict[str, Any] | None:
    """The disk rate limiter of ``config``, or None when no limit is configured."""
    bandwidth = revert_bytes(config.bw_rate // BITS_PER_BYTE)
    limiter: dict[str, Any] = {}
    if bandwidth:
        limiter["bandwidth"] = token_bucket(bandwidth, revert_bytes(config.bw_burst // BITS_PER_BYTE))
    if config.ops_rate:
        limiter["ops"] = token_bucket(config.ops_rate, config.ops_burst)
    return limiter or None
