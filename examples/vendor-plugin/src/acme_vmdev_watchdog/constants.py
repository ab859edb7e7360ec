"""What the entry module's cheap tests compare with: the node, the kind, the backends' names.

Nothing is imported here: ``vmdev plan`` imports every installed plugin's entry module, and that
module decides from these constants whether a call is for the watchdog before it imports anything.
"""

from __future__ import annotations

from typing import Final

WATCHDOG_MAJOR: Final = 10
WATCHDOG_MINOR: Final = 130
#: ``WatchdogDev.kind``: what ``device.kind`` and ``device_from_state``'s ``kind`` are compared with
KIND: Final = "watchdog"
#: ``target.hypervisor`` of the backends this vendor renders for (the core's backends' names)
QEMU: Final = "qemu"
CLOUD_HYPERVISOR: Final = "cloud-hypervisor"
FIRECRACKER: Final = "firecracker"
