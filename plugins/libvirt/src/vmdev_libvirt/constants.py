"""The backend's name, in a module that imports nothing (the entry module's cheap tests need it).

``vmdev plan`` imports every plugin's entry module; this one compares ``target.hypervisor`` with
:data:`NAME` before it imports the render target, the domain or the family renderers.
"""

from __future__ import annotations

from typing import Final

#: the backend's name (``vmdev plan --hypervisor libvirt``) and its Kata section
NAME: Final = "libvirt"
