from __future__ import annotations

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
