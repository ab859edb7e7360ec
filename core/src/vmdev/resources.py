"""Allocation of small numbered resources (drive indexes, SCSI ids, slots) from named pools.

A plan gets a fresh :class:`Allocator`; the device manager keeps one for the
life of a sandbox (and persists it), so indexes freed by a detach are reused
smallest-first, as Kata's runtime-rs does. Plugins receive it as the ``alloc``
argument of ``build_device`` and name their own pools (``"block.index"``).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Final

import attrs

from vmdev.errors import DeviceError

#: separates a scope from the owner key in :meth:`Allocator.scoped` views
SCOPE_SEPARATOR: Final = "|"
#: Kata's sandbox-wide disk index (its ``BlockIndexMap``): every disk-like device of a sandbox,
#: whichever family builds it, draws from this one pool so that indexes (and the guest names derived
#: from them) never collide
DISK_INDEX_POOL: Final = "block.index"
#: how many disk indexes a sandbox has (Kata's maxBlockIndex)
MAX_DISK_INDEX: Final = 65535


class ResourceExhaustedError(DeviceError):
    """Every index of a pool is in use."""


class _Pool:
    """One pool's taken indexes, kept so that every step costs the same however many are taken.

    ``used`` maps index to owner (in the order they were taken), ``owners`` each owner to its
    indexes, and ``holes`` (a heap, possibly with stale entries that are in use again) holds every
    free index below ``high``, one past the largest index ever taken.
    """

    __slots__ = ("high", "holes", "owners", "used")

    def __init__(self) -> None:
        self.used: dict[int, str] = {}
        self.owners: dict[str, list[int]] = {}
        self.holes: list[int] = []
        self.high = 0

    def add(self, index: int, owner: str) -> None:
        if index >= self.high:
            # skipped over, so free; ascending and above every hole so far, they keep the heap a heap
            self.holes.extend(range(self.high, index))
            self.high = index + 1
        self.used[index] = owner
        self.owners.setdefault(owner, []).append(index)

    def remove(self, owner: str) -> None:
        for index in self.owners.pop(owner, ()):
            del self.used[index]
            heapq.heappush(self.holes, index)

    def smallest_free(self, start: int, limit: int) -> int | None:
        """The smallest index in ``start .. limit-1`` that nobody holds, or None."""
        if start == 0:
            holes = self.holes
            while holes and holes[0] in self.used:
                heapq.heappop(holes)  # stale: taken again since it was freed
            if holes:
                return holes[0] if holes[0] < limit else None
            return self.high if self.high < limit else None
        return next((index for index in range(start, limit) if index not in self.used), None)


@attrs.define
class Allocator:
    """Pools of integers ``0 .. limit-1``; each taken index belongs to an owner (a device key)."""

    _pools: dict[str, _Pool] = attrs.field(factory=dict, alias="pools")

    def take(self, pool: str, owner: str, *, limit: int, device: str = "", start: int = 0) -> int:
        """The owner's index in ``pool``: the one it already has, else the smallest free one."""
        used = self._pools.get(pool)
        if used is None:
            used = self._pools[pool] = _Pool()
        held = used.owners.get(owner)
        if held:
            return held[0]
        index = used.smallest_free(start, limit)
        if index is None:
            raise ResourceExhaustedError(
                f"no free {pool} left (all {limit - start} in use)", device=device or owner, field=pool
            )
        used.add(index, owner)
        return index

    def release(self, owner: str) -> None:
        """Free every index ``owner`` holds, in every pool."""
        for used in self._pools.values():
            used.remove(owner)

    def release_scope(self, scope: str) -> None:
        """Free every index taken through :meth:`scoped` view ``scope``, in every pool."""
        prefix = scope + SCOPE_SEPARATOR
        for used in self._pools.values():
            for owner in [o for o in used.owners if o.startswith(prefix)]:
                used.remove(owner)

    def scoped(self, scope: str) -> Allocator:
        """A view of these pools whose owners are ``<scope>|<owner>``.

        The device manager hands each device such a view, so two devices whose plugins pick
        the same owner key (a container path used by two containers) never share an index,
        and :meth:`release_scope` frees everything one device took.
        """
        return ScopedAllocator(pools=self._pools, scope=scope)

    def in_use(self, pool: str) -> Mapping[int, str]:
        found = self._pools.get(pool)
        return dict(found.used) if found is not None else {}

    def snapshot(self) -> dict[str, dict[str, str]]:
        """JSON-ready state (``{pool: {index: owner}}``)."""
        pools = self._pools.items()
        return {pool: {str(i): o for i, o in sorted(p.used.items())} for pool, p in pools if p.used}

    @classmethod
    def restore(cls, data: Mapping[str, Mapping[str, str]]) -> Allocator:
        pools: dict[str, _Pool] = {}
        for name, used in data.items():
            pool = pools[name] = _Pool()
            for index, owner in sorted((int(i), o) for i, o in used.items()):
                pool.add(index, owner)
            # what the saved order said first stays first for an owner with several indexes
            order = {int(i): n for n, i in enumerate(used)}
            for indexes in pool.owners.values():
                indexes.sort(key=order.__getitem__)
            pool.used = {int(i): o for i, o in used.items()}
        return cls(pools=pools)


@attrs.define
class ScopedAllocator(Allocator):
    """An :class:`Allocator` sharing another one's pools, prefixing every owner with ``scope``."""

    scope: str = attrs.field(kw_only=True)

    def take(self, pool: str, owner: str, *, limit: int, device: str = "", start: int = 0) -> int:
        return super().take(
            pool, self.scope + SCOPE_SEPARATOR + owner, limit=limit, device=device or owner, start=start
        )

    def release(self, owner: str) -> None:
        super().release(self.scope + SCOPE_SEPARATOR + owner)
