"""The libvirt part of a plan: every device's element, and one minimal domain that holds them.

:func:`assemble` merges the devices' :class:`~vmdev_libvirt.target.LibvirtAttach` values:

* ``devices``: each device's elements, in plan order (a device passing several functions gives
  several); ``controllers``: the ``pcie-root-port`` controllers and the shared controllers the
  devices need; ``hotplug``/``unplug``: the live steps of hot-plugged devices (unplug in reverse);
* ``domain``: a whole domain with the cold-plugged devices, ready for ``virsh define``.

The domain is minimal but not naive. ACPI is on: without it a q35 guest has no PCI hot-plug
controller and loses its PCI tree at the first hot plug. Nothing may take the spare root ports
(``hotplug_root_ports``) before vmdev hot-plugs into them: every device has an explicit address,
and the devices libvirt would add on its own and place on a free root port are switched off
(``<controller type='usb' model='none'/>``, ``<memballoon model='none'/>``). Memory slots and a
NUMA cell are added for nvdimm devices, a shared memfd backing for vhost-user devices.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

import attrs

from vmdev.backends.qemu import SPARE_ROOT_PORTS_KEY
from vmdev.errors import UnsupportedError
from vmdev.qemu import MemoryNeeds
from vmdev.settings import SandboxSettings
from vmdev.targets import RenderTarget
from vmdev_libvirt import settings as keys
from vmdev_libvirt.target import LibvirtAttach, LibvirtTarget
from vmdev_libvirt.xmltree import check_text, element, parse, pretty, to_xml


def _strs(value: Sequence[str]) -> tuple[str, ...]:
    return tuple(value)


def _steps(value: Sequence[dict[str, str]]) -> tuple[dict[str, str], ...]:
    return tuple(dict(step) for step in value)


@attrs.frozen(kw_only=True)
class LibvirtPlan:
    """What ``vmdev plan --hypervisor libvirt`` prints under ``libvirt``."""

    devices: tuple[str, ...] = attrs.field(converter=_strs)
    controllers: tuple[str, ...] = attrs.field(converter=_strs)
    domain: str
    hotplug: tuple[dict[str, str], ...] = attrs.field(default=(), converter=_steps)
    unplug: tuple[dict[str, str], ...] = attrs.field(default=(), converter=_steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": list(self.devices),
            "controllers": list(self.controllers),
            "domain": self.domain,
            "hotplug": [dict(step) for step in self.hotplug],
            "unplug": [dict(step) for step in self.unplug],
        }

    def domain_text(self) -> str:
        """The domain indented for people and files (``virsh define FILE``)."""
        return pretty(parse(self.domain))


def spare_root_ports(settings: SandboxSettings) -> int:
    """``hotplug_root_ports`` (declared by the core's QEMU backend): root ports the plan has at
    least, for devices hot-plugged later; 0 when that backend is not loaded."""
    value = settings.values.get(SPARE_ROOT_PORTS_KEY, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def assemble(settings: SandboxSettings, target: RenderTarget, devices: Sequence[Any]) -> LibvirtPlan:
    """Merge the devices' renderings into the plan's libvirt part (see the module doc)."""
    assert isinstance(target, LibvirtTarget)
    attaches = [(d, d.attach) for d in devices if isinstance(d.attach, LibvirtAttach)]
    shared: dict[str, str] = {}
    memory = MemoryNeeds()
    for planned, attach in attaches:
        for key, xml in attach.controllers.items():
            if shared.setdefault(key, xml) != xml:
                raise UnsupportedError(
                    f"needs controller {key} as {xml}, but another device needs it as {shared[key]}",
                    device=planned.name,
                    field="controllers",
                )
        memory = MemoryNeeds(
            slots=memory.slots + attach.memory.slots,
            maxmem_extra_mib=memory.maxmem_extra_mib + attach.memory.maxmem_extra_mib,
            shared=memory.shared or attach.memory.shared,
        )
    target.ensure_root_ports(spare_root_ports(settings), device="sandbox", field=SPARE_ROOT_PORTS_KEY)
    controllers = [to_xml(node) for node in target.root_port_elements()] + list(shared.values())
    cold = [xml for _, attach in attaches if not attach.hotplugged for xml in attach.devices]
    domain = domain_element(settings, target, [parse(x) for x in controllers + cold], memory)
    return LibvirtPlan(
        devices=[xml for _, attach in attaches for xml in attach.devices],
        controllers=controllers,
        domain=to_xml(domain),
        hotplug=[step for _, attach in attaches for step in attach.hotplug],
        unplug=[step for _, attach in reversed(attaches) for step in attach.unplug],
    )


def domain_element(
    settings: SandboxSettings, target: LibvirtTarget, devices: Sequence[ET.Element], memory: MemoryNeeds
) -> ET.Element:
    """A minimal domain with ``devices`` (controllers first) and what they need of the machine."""
    mib = settings.memory_mib
    vcpus: int = keys.value(settings, keys.VCPUS)
    max_memory = None
    if memory.slots:
        max_memory = element("maxMemory", {"slots": memory.slots, "unit": "MiB"},
                             text=str(mib + max(memory.maxmem_extra_mib, 1)))
    return element(
        "domain", {"type": keys.value(settings, keys.DOMAIN_TYPE)},
        element("name", text=keys.value(settings, keys.DOMAIN_NAME)),
        max_memory,
        element("memory", {"unit": "MiB"}, text=str(mib)),
        element("vcpu", text=str(vcpus)),
        _memory_backing(settings, memory),
        _os(settings, target),
        element("features", {}, element("acpi")) if not target.ccw else None,
        _numa(vcpus, mib) if memory.slots else None,
        element("on_crash", text="destroy"),
        _devices(settings, target, devices),
    )


def _memory_backing(settings: SandboxSettings, memory: MemoryNeeds) -> ET.Element | None:
    hugepages = bool(keys.value(settings, keys.HUGEPAGES))
    if not (memory.shared or hugepages):
        return None
    return element(
        "memoryBacking", {},
        element("hugepages") if hugepages else None,
        element("source", {"type": "memfd"}) if memory.shared else None,
        element("access", {"mode": "shared"}) if memory.shared else None,
    )


def _os(settings: SandboxSettings, target: LibvirtTarget) -> ET.Element:
    arch = "s390x" if target.ccw else ("aarch64" if settings.machine_type.startswith("virt") else None)
    parts = [element("type", {"arch": arch, "machine": settings.machine_type}, text="hvm")]
    firmware: str = keys.value(settings, keys.FIRMWARE)
    if firmware:
        parts.append(element("loader", {"readonly": "yes", "type": "rom"},
                             text=check_text(firmware, device="domain", field=keys.FIRMWARE)))
    for key, tag in ((keys.KERNEL, "kernel"), (keys.INITRD, "initrd"), (keys.KERNEL_PARAMS, "cmdline")):
        text: str = keys.value(settings, key)
        if text:
            parts.append(element(tag, text=check_text(text, device="domain", field=key)))
    return element("os", {}, *parts)


def _numa(vcpus: int, mib: int) -> ET.Element:
    cpus = "0" if vcpus == 1 else f"0-{vcpus - 1}"
    return element("cpu", {}, element("numa", {}, element(
        "cell", {"id": 0, "cpus": cpus, "memory": mib, "unit": "MiB"})))


def _devices(settings: SandboxSettings, target: LibvirtTarget, devices: Sequence[ET.Element]) -> ET.Element:
    emulator: str = keys.value(settings, keys.EMULATOR)
    binary = element("emulator", text=check_text(emulator, device="domain", field=keys.EMULATOR)) \
        if emulator else None
    root = None
    if target.pcie and not target.ccw:
        root = element("controller", {"type": "pci", "index": 0, "model": "pcie-root"})
    return element(
        "devices", {},
        binary,
        element("controller", {"type": "usb", "model": "none"}),
        root,
        *devices,
        element("memballoon", {"model": "none"}),
    )
