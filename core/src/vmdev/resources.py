"""Allocation of small numbered resources (drive indexes, SCSI ids, slots) from named pools.

A plan gets a fresh :class:`Allocator`; the device manager keeps one for the
life of a sandbox (and persists it), so indexes freed by a detach are reused
smallest-first, as Kata's runtime-rs does. Plugins receive it as the ``alloc``
argument of ``build_device`` and name their own pools (``"block.index"``).
"""

from __future__ import annotations

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


@attrs.define
class Allocator:
    """Pools of integers ``0 .. limit-1``; each taken index belongs to an owner (a device key)."""

    _pools: dict[str, dict[int, str]] = attrs.field(factory=dict, alias="pools")

    def take(self, pool: str, owner: str, *, limit: int, device: str = "", start: int = 0) -> int:
        """The owner's index in ``pool``: the one it already has, else the smallest free one."""
        used = self._pools.setdefault(pool, {})
        for index, holder in used.items():
            if holder == owner:
                return index
        for index in range(start, limit):
            if index not in used:
                used[index] = owner
                return index
        raise ResourceExhaustedError(
            f"no free {pool} left (all {limit - start} in use)", device=device or owner, field=pool
        )

    def release(self, owner: str) -> None:
        """Free every index ``owner`` holds, in every pool."""
        for used in self._pools.values():
            for index in [i for i, holder in used.items() if holder == owner]:
                del used[index]

    def release_scope(self, scope: str) -> None:
        """Free every index taken through :meth:`scoped` view ``scope``, in every pool."""
        prefix = scope + SCOPE_SEPARATOR
        for used in self._pools.values():
            for index in [i for i, holder in used.items() if holder.startswith(prefix)]:
                del used[index]

    def scoped(self, scope: str) -> Allocator:
        """A view of these pools whose owners are ``<scope>|<owner>``.

        The device manager hands each device such a view, so two devices whose plugins pick
        the same owner key (a container path used by two containers) never share an index,
        and :meth:`release_scope` frees everything one device took.
        """
        return ScopedAllocator(pools=self._pools, scope=scope)

    def in_use(self, pool: str) -> Mapping[int, str]:
        return dict(self._pools.get(pool, {}))

    def snapshot(self) -> dict[str, dict[str, str]]:
        """JSON-ready state (``{pool: {index: owner}}``)."""
        pools = self._pools.items()
        return {pool: {str(i): o for i, o in sorted(used.items())} for pool, used in pools if used}

    @classmethod
    def restore(cls, data: Mapping[str, Mapping[str, str]]) -> Allocator:
        return cls(pools={pool: {int(i): o for i, o in used.items()} for pool, used in data.items()})


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
