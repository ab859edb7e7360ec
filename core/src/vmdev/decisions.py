"""Recording why a device got an option, for ``vmdev explain`` (:mod:`vmdev.explain`).

Rendering code calls :func:`decide` on every plan; only ``vmdev explain``'s notebook keeps what
it is told. This module is what rendering imports, and it creates no class: the explanation's
model (:class:`vmdev.explain.Decision` and the rest) is made only when a plan is explained, so an
ordinary ``vmdev plan`` does not pay for it (issue 13).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from vmdev.targets import RenderTarget

#: the device name decisions about the whole machine are recorded under
MACHINE: Final = "(machine)"


def explaining(target: RenderTarget) -> bool:
    """Whether ``target`` keeps decisions (skip building explanations when it does not)."""
    return callable(getattr(target.context.notes, "add_decision", None))


def decide(
    target: RenderTarget,
    device: str,
    option: str,
    because: str,
    *,
    settings: Mapping[str, Any] | None = None,
    facts: Mapping[str, str] | None = None,
    limits: Sequence[str] = (),
) -> None:
    """Record why ``device`` (its name in the plan: the container path, or :data:`MACHINE`) got
    ``option``. Does nothing unless the plan is made by ``vmdev explain``."""
    add = getattr(target.context.notes, "add_decision", None)
    if callable(add):
        add(device, option=option, because=because, settings=settings or {}, facts=facts or {}, limits=limits)
