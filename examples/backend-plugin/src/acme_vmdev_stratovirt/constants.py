"""What the entry module needs without importing the backend: its name, its Kata section, its
description, and the machines and memory sizes ``check_settings`` accepts.

``vmdev plan`` imports every installed plugin's entry module for every container, whatever the
hypervisor; this module imports nothing, so a QEMU plan pays for these constants only.
"""

from __future__ import annotations

from typing import Final

#: the backend's name (``vmdev plan --hypervisor stratovirt``, ``target.hypervisor``)
NAME: Final = "stratovirt"
#: Kata's ``[hypervisor.stratovirt]``
KATA_SECTION: Final = "stratovirt"
DESCRIPTION: Final = "StratoVirt: command-line options (q35, virt, microvm) and QMP hot plug of disks"
MICROVM: Final = "microvm"
#: StratoVirt's machine types (``-machine``): microvm, q35 (x86_64) and virt (aarch64)
MACHINES: Final = (MICROVM, "q35", "virt")
#: StratoVirt's guest memory range, in MiB (128 MiB to 512 GiB)
MEMORY_RANGE_MIB: Final = (128, 512 * 1024)
