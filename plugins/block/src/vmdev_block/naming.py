"""Guest-side names Kata derives from a drive index: ``/dev/vdX`` names and SCSI addresses."""

from __future__ import annotations

from typing import Final

from vmdev.errors import DeviceError
from vmdev_block.constants import MAX_SCSI_DEVICES

#: letters available after the ``vd`` prefix (Kata: 32 minus the 2 of ``vd``)
_MAX_LETTERS: Final = 30
#: LUNs per SCSI target in Kata's numbering (``index = scsi_id * 256 + lun``)
LUNS_PER_TARGET: Final = 256


def virt_drive_name(index: int, *, device: str = "") -> str:
    """``vda``..``vdz``, ``vdaa``.. for index 0, 1, ... (Kata's ``GetVirtDriveName``).

    Spreadsheet-column naming: take ``'a' + index % 26``, then ``index = index // 26 - 1``
    until it goes negative, and reverse.
    """
    if index < 0:
        raise DeviceError("Index cannot be negative for drive", device=device, field="index")
    letters: list[str] = []
    while index >= 0:
        if len(letters) == _MAX_LETTERS:
            raise DeviceError("Index not supported", device=device, field="index")
        letters.append(chr(ord("a") + index % 26))
        index = index // 26 - 1
    return "vd" + "".join(reversed(letters))


def scsi_id_lun(index: int, *, device: str = "") -> tuple[int, int]:
    """``(index // 256, index % 256)`` (Kata's ``GetSCSIIdLun``)."""
    if index < 0:
        raise DeviceError("Index cannot be negative", device=device, field="index")
    if index > MAX_SCSI_DEVICES:
        raise DeviceError(
            f"Index cannot be greater than {MAX_SCSI_DEVICES}, maximum of {MAX_SCSI_DEVICES} "
            "devices are supported",
            device=device,
            field="index",
        )
    return index // LUNS_PER_TARGET, index % LUNS_PER_TARGET


def scsi_address(index: int, *, device: str = "") -> str:
    """``"<scsi-id>:<lun>"`` (Kata's ``GetSCSIAddress``): 258 -> ``1:2``."""
    scsi_id, lun = scsi_id_lun(index, device=device)
    return f"{scsi_id}:{lun}"
