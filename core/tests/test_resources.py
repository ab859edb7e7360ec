from __future__ import annotations

import random

import pytest

from vmdev.resources import Allocator, ResourceExhaustedError


def test_smallest_free_first_and_reuse_after_release() -> None:
    alloc = Allocator()
    assert [alloc.take("idx", o, limit=10) for o in "abc"] == [0, 1, 2]
    assert alloc.take("idx", "b", limit=10) == 1  # same owner, same index
    alloc.release("b")
    assert alloc.take("idx", "d", limit=10) == 1
    assert alloc.take("other", "a", limit=10, start=1) == 1


def test_exhaustion_names_the_device_and_pool() -> None:
    alloc = Allocator()
    alloc.take("scsi", "a", limit=1)
    with pytest.raises(ResourceExhaustedError, match="no free scsi left") as exc:
        alloc.take("scsi", "b", limit=1, device="/dev/sdb")
    assert (exc.value.device, exc.value.field) == ("/dev/sdb", "scsi")


def test_snapshot_round_trip() -> None:
    alloc = Allocator()
    alloc.take("idx", "a", limit=5)
    alloc.take("idx", "b", limit=5)
    alloc.release("a")
    data = alloc.snapshot()
    assert data == {"idx": {"1": "b"}}
    restored = Allocator.restore(data)
    assert restored.take("idx", "c", limit=5) == 0
    assert restored.in_use("idx") == {0: "c", 1: "b"}


class _LinearAllocator:
    """What the allocator promises, the slow obvious way: scan every index."""

    def __init__(self) -> None:
        self.pools: dict[str, dict[int, str]] = {}

    def take(self, pool: str, owner: str, limit: int, start: int) -> int | None:
        used = self.pools.setdefault(pool, {})
        held = [index for index, holder in used.items() if holder == owner]
        if held:
            return held[0]
        free = next((index for index in range(start, limit) if index not in used), None)
        if free is not None:
            used[free] = owner
        return free

    def release(self, owner: str) -> None:
        for used in self.pools.values():
            for index in [i for i, holder in used.items() if holder == owner]:
                del used[index]


def test_the_allocator_gives_what_a_linear_scan_would_in_random_sequences() -> None:
    rnd = random.Random(13)
    for _ in range(300):
        alloc, model = Allocator(), _LinearAllocator()
        for _ in range(rnd.randint(1, 60)):
            pool, owner = rnd.choice("pq"), rnd.choice("abcdefgh")
            if rnd.random() < 0.65:
                limit, start = rnd.choice((3, 6, 50)), rnd.choice((0, 0, 0, 2))
                expected = model.take(pool, owner, limit, start)
                if expected is None:
                    with pytest.raises(ResourceExhaustedError):
                        alloc.take(pool, owner, limit=limit, start=start)
                else:
                    assert alloc.take(pool, owner, limit=limit, start=start) == expected
            elif rnd.random() < 0.8:
                alloc.release(owner)
                model.release(owner)
            else:  # a saved sandbox comes back
                alloc = Allocator.restore(alloc.snapshot())
            assert {p: dict(alloc.in_use(p)) for p in "pq"} == {p: model.pools.get(p, {}) for p in "pq"}
