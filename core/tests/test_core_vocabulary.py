"""The core names no device family: its sources carry none of the families' vocabulary.

Each family plugin implements its own probing, models and driver constants (the product's design);
a family word in the core is where a closed list starts again (issue 9 found `enable_vhost_user_store`
read by the core and ignored by the plugin). Generic QEMU machinery (QMP verbs, PCIe ports, the
``-device``/``-object`` syntax) is the QEMU backend's and allowed; device models and drivers are not.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "src" / "vmdev"

#: (what, pattern): driver names, the vhost-user pseudo majors, family words and model names
VOCABULARY = [
    ("VFIO", r"vfio"),
    ("vhost-user", r"vhost"),
    ("NVDIMM", r"nvdimm"),
    ("IOMMUFD", r"iommufd"),
    ("a block driver", r"virtio-blk|virtio-scsi|scsi-hd|virtio-mmio-blk|blk-ccw"),
    ("the RNG driver", r"virtio-rng|rng-random"),
    ("virtio-fs / 9p", r"virtio-fs|virtiofs|virtio-9p|\b9p\b"),
    ("a loop device", r"\bloop(?:\d|_device|back| device)"),
    ("the vhost-user majors 241/242", r"(?<![\d.x])24[12](?![\d.])"),
    ("a family model", r"BlockDrive|VFIODev|VFIODeviceType|VhostUserDeviceAttrs|RNGDev|PmemDeviceInfo"),
]


def _sources() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_the_core_sources_are_found() -> None:
    names = {p.name for p in _sources()}
    assert {"plugins.py", "planner.py", "hookspecs.py"} <= names


@pytest.mark.parametrize(("what", "pattern"), VOCABULARY, ids=[w for w, _ in VOCABULARY])
def test_the_core_never_names_a_device_family(what: str, pattern: str) -> None:
    regex = re.compile(pattern, re.IGNORECASE)
    hits = [
        f"{path.relative_to(CORE)}:{number}: {line.strip()}"
        for path in _sources()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if regex.search(line)
    ]
    assert not hits, f"the core names {what}:\n" + "\n".join(hits)


def test_the_check_would_catch_a_family_word() -> None:
    # the guard itself can fail: the same patterns find the vocabulary in a family plugin's source
    sample = 'VHOST_USER_BLK_MAJOR = 241\nargs = opts("virtio-blk-pci", {})\nclass BlockDrive: ...\n'
    found = {what for what, pattern in VOCABULARY if re.search(pattern, sample, re.IGNORECASE)}
    assert found == {"vhost-user", "a block driver", "the vhost-user majors 241/242", "a family model"}
