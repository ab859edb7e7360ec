"""Pure helpers that inspect and adjust a QEMU argument vector."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

BASE_APPEND = "console=ttyS0 quiet panic=-1"
QBOOT = Path("/usr/share/qemu/qboot.rom")
_MACHINE_OPTIONS = ("-machine", "--machine", "-M")
_ACCEL_OPTIONS = ("-accel", "--accel")
_KVM_FLAGS = ("-enable-kvm", "--enable-kvm")


def option_values(argv: Sequence[str], *names: str) -> list[str]:
    """Values of every ``NAME VALUE`` / ``NAME=VALUE`` occurrence of the given options."""
    values: list[str] = []
    for index, arg in enumerate(argv):
        name, sep, inline = arg.partition("=")
        if name in names:
            if sep:
                values.append(inline)
            elif index + 1 < len(argv):
                values.append(argv[index + 1])
    return values


def has_option(argv: Sequence[str], *names: str) -> bool:
    return any(arg.partition("=")[0] in names for arg in argv)


def machine_type(argv: Sequence[str]) -> str:
    """The ``-machine`` type of ``argv`` ("" when there is no -machine option)."""
    machine = ""
    for value in option_values(argv, *_MACHINE_OPTIONS):
        for index, item in enumerate(value.split(",")):
            key, sep, val = item.partition("=")
            if key == "type" and sep:
                machine = val
            elif index == 0 and not sep:
                machine = key
    return machine


def is_microvm(argv: Sequence[str]) -> bool:
    return machine_type(argv) == "microvm"


def is_pc_machine(argv: Sequence[str]) -> bool:
    """q35/pc family, or no -machine at all (QEMU's x86 default is pc)."""
    machine = machine_type(argv)
    return machine in ("", "q35", "pc") or machine.startswith(("pc-", "pc-q35", "pc-i440fx"))


def force_tcg(argv: Sequence[str]) -> list[str]:
    """``argv`` without accelerator choices (-accel, -enable-kvm, -machine accel=...).

    The rig adds ``-accel tcg`` itself: this host's KVM cannot run a stock guest kernel.
    """
    result: list[str] = []
    skip_next = False
    for index, arg in enumerate(argv):
        if skip_next:
            skip_next = False
            continue
        name, sep, _ = arg.partition("=")
        if arg in _KVM_FLAGS or name in _ACCEL_OPTIONS:
            skip_next = not sep and name in _ACCEL_OPTIONS
            continue
        if index > 0 and argv[index - 1] in _MACHINE_OPTIONS:
            arg = ",".join(item for item in arg.split(",") if not item.startswith("accel="))
            if not arg:  # "-machine accel=kvm": nothing left
                result.pop()
                continue
        result.append(arg)
    return result


def host_tsc_khz(cpuinfo: Path = Path("/proc/cpuinfo")) -> int | None:
    """The host CPU clock in kHz (first ``cpu MHz`` line), or None if unknown."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "cpu MHz":
            try:
                return int(float(value) * 1000)
            except ValueError:
                return None
    return None


def kernel_append(argv: Sequence[str], extra: str = "") -> str:
    """Guest kernel command line: the rig's base, microvm's TSC hint, then ``extra``."""
    parts = [BASE_APPEND]
    khz = host_tsc_khz() if is_microvm(argv) else None
    if khz:
        parts.append(f"tsc_early_khz={khz}")  # TSC calibration hangs under TCG without it
    if extra.strip():
        parts.append(extra.strip())
    return " ".join(parts)


def firmware_args(argv: Sequence[str], bios: str | None) -> list[str]:
    """``-bios`` arguments: explicit ``bios``; "" = QEMU's default; None = qboot on q35/pc."""
    if bios is not None:
        return ["-bios", bios] if bios else []
    if has_option(argv, "-bios", "--bios") or not is_pc_machine(argv) or not QBOOT.is_file():
        return []
    return ["-bios", str(QBOOT)]
