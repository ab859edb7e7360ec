"""The open core names no device family: vmdev-block owns its names and takes none from the core."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import vmdev_block

PACKAGE = Path(vmdev_block.__file__).parent
TESTS = Path(__file__).parent
#: what the plugin may import from these core modules (MIGRATION.md: the generic names)
GENERIC = {
    "vmdev.models": {"DeviceInfo", "Device", "GenericDevice", "PciPath", "PCIePort", "OCI_DEVICE_TYPES",
                     "PCI_DOMAIN", "MAX_PCIE_ROOT_PORT", "MAX_PCIE_SWITCH_PORT", "PCI_BRIDGE_MAX_CAPACITY",
                     "MAX_DEV_ID_SIZE"},
    "vmdev.host": {"HostContext", "SysfsReader", "StatFunc", "read_regular", "decode_text"},
    "vmdev.testing": {"FakeHost", "StartupProbe"},
    "vmdev.targets": {"ApiRequest", "AttachOptions", "RenderTarget", "PCI", "MMIO", "CCW", "request_tuple"},
    "vmdev.cliutil": set(),
}
#: Kata's values of the names the core held (virtcontainers/device/config)
SEED_VALUES = {
    "VIRTIO_MMIO": "virtio-mmio", "VIRTIO_BLOCK": "virtio-blk", "VIRTIO_BLOCK_CCW": "virtio-blk-ccw",
    "VIRTIO_SCSI": "virtio-scsi", "NVDIMM": "nvdimm",
    "BLOCK_DRIVERS": ("virtio-scsi", "virtio-blk", "virtio-mmio", "nvdimm", "virtio-blk-ccw"),
    "AIO_THREADS": "threads", "AIO_NATIVE": "native", "AIO_IO_URING": "io_uring",
    "BLOCK_AIO_MODES": ("io_uring", "native", "threads"), "FS_TYPE_OPT": "fstype",
    "BLOCK_DRIVER_OPT": "block-driver", "MAX_SCSI_DEVICES": 65535, "MAX_BLOCK_INDEX": 65535,
    "SCSI_CONTROLLER_ID": "scsi0", "BLOCK_INDEX_POOL": "block.index", "DEVICE_BLOCK": "block",
}


def _sources() -> list[Path]:
    return sorted(PACKAGE.glob("*.py")) + sorted(TESTS.glob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_family_name_is_imported_from_the_core(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in GENERIC:
            taken = {alias.name for alias in node.names} - GENERIC[node.module]
            assert not taken, f"{path.name}:{node.lineno} imports {sorted(taken)} from {node.module}"
    text = path.read_text()
    assert not re.search(r"fake(_host)?\.loop_device\(|[.]vhost_user_store\b", text), path.name


def test_the_seed_names_are_importable_from_the_distribution() -> None:
    for name, value in SEED_VALUES.items():
        assert getattr(vmdev_block, name) == value, name
    assert vmdev_block.BlockDrive(file="/f", id="drive-1").kind == "block"
    assert vmdev_block.pmem_device_info.__module__ == "vmdev_block.host"
    from vmdev.resources import DISK_INDEX_POOL
    from vmdev_block.testing import loop_device

    assert vmdev_block.BLOCK_INDEX_POOL == DISK_INDEX_POOL  # the pool vhost-user-blk shares
    assert callable(loop_device)
