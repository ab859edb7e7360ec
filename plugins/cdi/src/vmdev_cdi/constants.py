"""The constants the plugin's cheap tests need, in a module that imports nothing.

``vmdev plan`` imports every plugin's entry module; the entry module decides from these whether a
spec asks for CDI at all before it imports the library (registry, spec decoding, model).
"""

from __future__ import annotations

from typing import Final

#: the prefix of the annotations that name CDI devices (Go: ``AnnotationPrefix``)
ANNOTATION_PREFIX: Final = "cdi.k8s.io/"
DEFAULT_STATIC_DIR: Final = "/etc/cdi"
DEFAULT_DYNAMIC_DIR: Final = "/var/run/cdi"
DEFAULT_SPEC_DIRS: Final = (DEFAULT_STATIC_DIR, DEFAULT_DYNAMIC_DIR)
