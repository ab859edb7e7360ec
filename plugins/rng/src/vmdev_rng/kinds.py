"""The names vmdev-rng's hooks test before importing the family: the device kind and its fixed id.

Kept apart from ``device.py`` (which defines the attrs model) so that loading the plugin and
answering hooks for other families' devices costs no class creation (issue 13, cold start).
"""

from __future__ import annotations

from typing import Final

#: ``RNGDev.kind``: the kind a saved RNG is recorded under and that ``attach_options`` answers
RNG_KIND: Final = "rng"
#: the sandbox RNG's fixed id (Kata's ``rng0``)
RNG_ID: Final = "rng0"
