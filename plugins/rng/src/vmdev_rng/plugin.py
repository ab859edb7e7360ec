"""The vmdev-rng plugin: the sandbox's virtio-rng device (entry point ``rng``).

Hook implementations only; each delegates to one module of the family's template:

* ``settings.py``: the declared keys (``entropy_source``, ``valid_entropy_sources``) and the rule
  across them;
* ``device.py``: the model (``RNGDev``), building it, rebuilding it from saved state;
* ``host.py``: the check that the entropy source exists on the host;
* ``render_qemu.py``, ``render_clh.py``, ``render_firecracker.py``: one per backend.

For any other backend ``attach_options`` declines, so a backend's own plugin may render the RNG
(``examples/backend-plugin`` does for StratoVirt); if none does, the core names the device and
the backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from vmdev import hookimpl
from vmdev.backends.clh import ClhTarget
from vmdev.backends.firecracker import FirecrackerTarget
from vmdev.backends.qemu import QemuTarget
from vmdev.declared import Setting
from vmdev.host import HostContext
from vmdev.models import Device
from vmdev.settings import SandboxSettings
from vmdev.targets import AttachOptions, RenderTarget
from vmdev_rng import render_clh, render_firecracker, render_qemu
from vmdev_rng.device import RNG_ID, RNGDev, build, from_state, wanted
from vmdev_rng.settings import SETTINGS, check_allowed

#: the target class of each backend this family renders for, and its renderer
RENDERERS: Final[tuple[tuple[type[RenderTarget], Callable[[RNGDev, Any, bool], AttachOptions]], ...]] = (
    (QemuTarget, render_qemu.render),
    (ClhTarget, render_clh.render),
    (FirecrackerTarget, render_firecracker.render),
)


@hookimpl
def register_settings(register: Callable[[Setting], None]) -> None:
    for setting in SETTINGS:
        register(setting)


@hookimpl
def check_settings(settings: SandboxSettings) -> None:
    check_allowed(settings, device=RNG_ID)


@hookimpl
def sandbox_devices(settings: SandboxSettings, host: HostContext) -> Sequence[Device]:
    return [build(settings, host)] if wanted(settings) else []


@hookimpl
def device_from_state(kind: str, data: Mapping[str, object]) -> Device | None:
    return from_state(kind, data)


@hookimpl
def host_facts(device: Device, host: HostContext) -> Mapping[str, str] | None:
    # The entropy source is the device's host node, whose type and major:minor the core records;
    # nothing else on the host decides the RNG's options.
    return {} if isinstance(device, RNGDev) else None


@hookimpl
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    if not isinstance(device, RNGDev):
        return None
    for target_type, render in RENDERERS:
        if isinstance(target, target_type):
            return render(device, target, hotplug)
    return None
