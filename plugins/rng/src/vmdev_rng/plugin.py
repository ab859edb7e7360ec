"""The vmdev-rng plugin: the sandbox's virtio-rng device (entry point ``rng``).

Hook implementations only; each delegates to one module of the family's template:

* ``settings.py``: the declared keys (``entropy_source``, ``valid_entropy_sources``), the rule
  across them, and whether the sandbox wants an RNG at all;
* ``kinds.py``: the device kind and id the hooks test first;
* ``device.py``: the model (``RNGDev``), building it, rebuilding it from saved state;
* ``host.py``: the check that the entropy source exists on the host;
* ``render_qemu.py``, ``render_clh.py``, ``render_firecracker.py``: one per backend.

This module is imported on every ``vmdev`` run (issue 13, cold start), so at import it loads only
the light ``settings``/``kinds`` modules: each hook first decides cheaply (the device's ``kind``,
the saved kind, the target's ``hypervisor`` name) whether the call is the family's, and only then
imports the model or the one renderer it needs. No backend module is imported from here.

For any other backend ``attach_options`` declines, so a backend's own plugin may render the RNG
(``examples/backend-plugin`` does for StratoVirt); if none does, the core names the device and
the backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, cast

from vmdev import hookimpl
from vmdev_rng.kinds import RNG_ID, RNG_KIND
from vmdev_rng.settings import SETTINGS, check_allowed, wanted

if TYPE_CHECKING:
    from vmdev.backends.clh import ClhTarget
    from vmdev.backends.firecracker import FirecrackerTarget
    from vmdev.backends.qemu import QemuTarget
    from vmdev.declared import Setting
    from vmdev.host import HostContext
    from vmdev.models import Device
    from vmdev.settings import SandboxSettings
    from vmdev.targets import AttachOptions, RenderTarget
    from vmdev_rng.device import RNGDev


@hookimpl
def register_settings(register: Callable[[Setting], None]) -> None:
    for setting in SETTINGS:
        register(setting)


@hookimpl
def check_settings(settings: SandboxSettings) -> None:
    check_allowed(settings, device=RNG_ID)


@hookimpl
def sandbox_devices(settings: SandboxSettings, host: HostContext) -> Sequence[Device]:
    if not wanted(settings):
        return []
    from vmdev_rng.device import build

    return [build(settings, host)]


@hookimpl
def device_from_state(kind: str, data: Mapping[str, object]) -> Device | None:
    if kind != RNG_KIND:
        return None
    from vmdev_rng.device import from_state

    return from_state(kind, data)


@hookimpl
def host_facts(device: Device, host: HostContext) -> Mapping[str, str] | None:
    # The entropy source is the device's host node, whose type and major:minor the core records;
    # nothing else on the host decides the RNG's options.
    return {} if _as_rng(device) is not None else None


@hookimpl
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    """By the target's ``hypervisor`` name, so no backend module is imported for another backend."""
    if target.hypervisor not in ("qemu", "cloud-hypervisor", "firecracker"):
        return None
    rng = _as_rng(device)
    if rng is None:
        return None
    if target.hypervisor == "qemu":
        from vmdev_rng import render_qemu

        return render_qemu.render(rng, cast("QemuTarget", target), hotplug)
    if target.hypervisor == "cloud-hypervisor":
        from vmdev_rng import render_clh

        return render_clh.render(rng, cast("ClhTarget", target), hotplug)
    from vmdev_rng import render_firecracker

    return render_firecracker.render(rng, cast("FirecrackerTarget", target), hotplug)


def _as_rng(device: Device) -> RNGDev | None:
    """``device`` if it is this family's: its kind first (no import for other families' devices),
    then its class (another plugin's device may reuse the kind name)."""
    if device.kind != RNG_KIND:
        return None
    from vmdev_rng.device import RNGDev

    return device if isinstance(device, RNGDev) else None
