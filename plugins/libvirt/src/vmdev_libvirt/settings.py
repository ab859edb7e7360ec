"""The settings keys vmdev-libvirt owns: Kata's keys that mean something in a libvirt domain, and
libvirt's own.

Kata has no libvirt hypervisor, so its keys are read from ``[hypervisor.libvirt]`` (the backend's
section; a ``[vmdev]`` table wins over it as for every backend):

* ``default_vcpus``, ``kernel``, ``initrd``, ``kernel_params``, ``firmware``, ``path`` and
  ``enable_hugepages`` as Kata's QEMU section has them: the domain's ``<vcpu>``, direct kernel
  boot (``<os><kernel>/<initrd>/<cmdline>``), ``<loader type='rom'>``, ``<emulator>`` and
  ``<memoryBacking><hugepages/>``. Unlike Kata, ``default_vcpus`` must be 1 or more (Kata turns 0
  and negative numbers into the host's core count; a plan does not depend on the planning host).
* vmdev's own: ``libvirt_uri`` (the connection of ``vmdev attach``/``detach``/``status`` unless
  ``--connect`` is given: the live driver reads it in the sandbox's settings, which the core
  hands it with the connection; not set, ``$LIBVIRT_DEFAULT_URI``, else ``qemu:///system``),
  ``libvirt_managed_hostdevs`` (whether libvirt may bind PCI functions to vfio-pci itself:
  ``managed='yes'``; vmdev's default is ``no``, as Kata expects the host to be prepared),
  ``libvirt_domain_type`` (``kvm``, or ``qemu`` for TCG) and ``libvirt_domain_name``.

Settings of the device families (``block_device_aio`` and the cache keys of vmdev-block) are read
when that family declares them: :func:`family_value`.

Kata's keys here are the libvirt backend's (``backends=(NAME,)``): QEMU's backend may declare the
same names. This module is imported with the entry module on every ``vmdev plan``, so it holds
only the keys and constants.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from vmdev.declared import BOOLEAN, INTEGER, STRING, Setting
from vmdev_libvirt.constants import NAME

if TYPE_CHECKING:
    from vmdev.settings import SandboxSettings

LIBVIRT_URI: Final = "libvirt_uri"
MANAGED_HOSTDEVS: Final = "libvirt_managed_hostdevs"
DOMAIN_TYPE: Final = "libvirt_domain_type"
DOMAIN_NAME: Final = "libvirt_domain_name"
VCPUS: Final = "default_vcpus"
KERNEL: Final = "kernel"
INITRD: Final = "initrd"
KERNEL_PARAMS: Final = "kernel_params"
FIRMWARE: Final = "firmware"
EMULATOR: Final = "path"
HUGEPAGES: Final = "enable_hugepages"

DEFAULT_URI: Final = "qemu:///system"
DEFAULT_DOMAIN_NAME: Final = "vmdev-sandbox"
DOMAIN_TYPES: Final = ("kvm", "qemu")
#: every key is the libvirt backend's
ONLY: Final = (NAME,)
#: libvirt's limit of vCPUs per QEMU domain on x86 (q35 with x2APIC)
MAX_VCPUS: Final = 4096


def _domain_name(value: str) -> None:
    if not value or "/" in value or value.strip() != value:
        raise ValueError(f"{value!r} is not a libvirt domain name (non-empty, no '/', no surrounding spaces)")


SETTINGS: Final = (
    Setting(
        backends=ONLY, name=LIBVIRT_URI, type=STRING, default=DEFAULT_URI,
        description="the libvirt connection URI of vmdev attach/detach/status unless --connect is given "
        "(not set: $LIBVIRT_DEFAULT_URI, else qemu:///system)",
    ),
    Setting(
        backends=ONLY, name=MANAGED_HOSTDEVS, type=BOOLEAN, default=False,
        description="let libvirt bind passed-through PCI functions to vfio-pci itself (hostdev "
        "managed='yes'); off: the host binds them, as Kata expects",
    ),
    Setting(
        backends=ONLY, name=DOMAIN_TYPE, type=STRING, default="kvm", choices=DOMAIN_TYPES,
        description="the libvirt domain type: kvm, or qemu for QEMU's TCG emulation",
    ),
    Setting(
        backends=ONLY, name=DOMAIN_NAME, type=STRING, default=DEFAULT_DOMAIN_NAME, check=_domain_name,
        description="the <name> of the planned domain",
    ),
    Setting(
        backends=ONLY, name=VCPUS, type=INTEGER, default=1, minimum=1, maximum=MAX_VCPUS, kata_key=VCPUS,
        description="the domain's vCPUs (<vcpu>)",
    ),
    Setting(backends=ONLY, name=KERNEL, type=STRING, default="", kata_key=KERNEL,
            description="guest kernel for direct kernel boot (<os><kernel>); \"\": boot from firmware"),
    Setting(backends=ONLY, name=INITRD, type=STRING, default="", kata_key=INITRD,
            description="initrd of direct kernel boot (<os><initrd>)"),
    Setting(backends=ONLY, name=KERNEL_PARAMS, type=STRING, default="", kata_key=KERNEL_PARAMS,
            description="kernel command line of direct kernel boot (<os><cmdline>)"),
    Setting(backends=ONLY, name=FIRMWARE, type=STRING, default="", kata_key=FIRMWARE,
            description="firmware image (<loader type='rom'>); \"\": libvirt's default"),
    Setting(backends=ONLY, name=EMULATOR, type=STRING, default="", kata_key=EMULATOR,
            description="the QEMU binary (<emulator>); \"\": libvirt's default for the machine"),
    Setting(backends=ONLY, name=HUGEPAGES, type=BOOLEAN, default=False, kata_key=HUGEPAGES,
            description="back guest RAM with huge pages (<memoryBacking><hugepages/>)"),
)


def value(settings: SandboxSettings, key: str) -> Any:
    """A key this plugin declares (typed by the core)."""
    return settings.value(key)


def family_value(settings: SandboxSettings, key: str) -> Any:
    """A key a device family declares, or None when that family is not installed (or the key is
    undeclared): the libvirt default then applies."""
    return settings.values.get(key)
