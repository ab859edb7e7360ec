"""vmdev-rng: the sandbox's entropy device (virtio-rng), as a vmdev plugin (entry point ``rng``).

Public names: :class:`RNGDev` and :data:`RNG_ID` (the device), and the settings keys
(:data:`ENTROPY_SOURCE`, :data:`VALID_ENTROPY_SOURCES`). See ``plugin.py`` for the anatomy.
"""

from vmdev_rng.device import RNG_ID, RNGDev
from vmdev_rng.settings import DEFAULT_ENTROPY_SOURCE, ENTROPY_SOURCE, VALID_ENTROPY_SOURCES

__all__ = ["DEFAULT_ENTROPY_SOURCE", "ENTROPY_SOURCE", "RNG_ID", "VALID_ENTROPY_SOURCES", "RNGDev"]
