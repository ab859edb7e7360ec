"""Helpers for vmdev-libvirt's real-libvirtd tests: virsh, libvirt's schema validator, and a rig
guest (the rig's kernel and initramfs, direct kernel boot under TCG) run as a libvirt domain.

libvirtd must be running (``qemu:///system``); the tests start nothing themselves. Without
systemd (this project's machines), as root::

    apt-get install --no-install-recommends libvirt-daemon-system libvirt-clients libxml2-utils
    mkdir -p /run/libvirt && virtlogd --daemon && libvirtd --daemon

(plugins/libvirt/README.md explains each step). A missing prerequisite makes the tests fail with
that text, never skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from vmdev_rig import GuestReport, Rig, parse_reports

URI = "qemu:///system"
START_HINT = (
    "apt-get install --no-install-recommends libvirt-daemon-system libvirt-clients libxml2-utils; "
    "mkdir -p /run/libvirt && virtlogd --daemon && libvirtd --daemon (see plugins/libvirt/README.md)"
)
QBOOT = Path("/usr/share/qemu/qboot.rom")
#: the rig's kernel command line (tests/e2e/vmdev_rig/argv.py BASE_APPEND)
APPEND = "console=ttyS0 quiet panic=-1"


def require_libvirt() -> None:
    """Fail (not skip) unless virsh, virt-xml-validate and a running libvirtd are there."""
    for tool in ("virsh", "virt-xml-validate", "xmllint"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing; install and start libvirt: {START_HINT}", pytrace=False)
    done = subprocess.run(["virsh", "-c", URI, "version"], capture_output=True, text=True, timeout=120,
                          check=False)
    if done.returncode != 0:
        pytest.fail(f"libvirtd does not answer on {URI} ({done.stderr.strip()}); {START_HINT}", pytrace=False)


def virsh(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["virsh", "-c", URI, *args], input=stdin, capture_output=True, text=True,
                          timeout=120, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def validate(xml: str, schema: str = "domain") -> str:
    """virt-xml-validate's verdict on ``xml`` (AssertionError with its output if invalid)."""
    with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as handle:
        handle.write(xml)
    try:
        done = subprocess.run(["virt-xml-validate", handle.name, schema], capture_output=True, text=True,
                              timeout=60, check=False)
    finally:
        os.unlink(handle.name)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, f"virt-xml-validate rejects the XML: {output}\n{xml}"
    return output


def rig_settings(rig: Rig, name: str, *, wait: int = 0, **extra: Any) -> str:
    """A ``[hypervisor.libvirt]`` TOML for a rig guest: TCG, the rig's kernel and initramfs."""
    params = APPEND + (f" qh.wait={wait}" if wait else "")
    keys: dict[str, Any] = {
        "libvirt_domain_type": "qemu",
        "libvirt_domain_name": name,
        "kernel": str(rig.kernel.vmlinuz),
        "initrd": str(rig.initramfs),
        "kernel_params": params,
        "default_memory": 512,
        **({"firmware": str(QBOOT)} if QBOOT.is_file() else {}),
        **extra,
    }
    lines = ["[hypervisor.libvirt]"] + [f"{key} = {json.dumps(value)}" for key, value in keys.items()
                                        if not isinstance(value, dict)]
    for table, values in keys.items():
        if isinstance(values, dict):
            lines += [f"[{table}]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def rig_domain(domain: str, serial_log: Path) -> str:
    """The plan's domain plus what only the rig needs: the serial console in a file, QEMU as root
    (the rig's kernel lives in root's cache, which libvirt's qemu user cannot read), and no
    restart when the guest powers off."""
    root = ET.fromstring(domain)
    serial = ET.SubElement(root.find("devices"), "serial", {"type": "file"})  # type: ignore[arg-type]
    ET.SubElement(serial, "source", {"path": str(serial_log)})
    ET.SubElement(serial, "target", {"port": "0"})
    ET.SubElement(root, "on_poweroff").text = "destroy"
    label = ET.SubElement(root, "seclabel", {"type": "static", "model": "dac", "relabel": "no"})
    ET.SubElement(label, "label").text = "+0:+0"
    return ET.tostring(root, encoding="unicode")


@contextlib.contextmanager
def running_domain(xml: str) -> Iterator[str]:
    """Define and start the domain; destroyed and undefined on the way out, whatever happened."""
    name = ET.fromstring(xml).findtext("name") or ""
    remove(name)
    virsh("define", "/dev/stdin", stdin=xml)
    try:
        virsh("start", name)
        yield name
    finally:
        remove(name)


def remove(name: str) -> None:
    if virsh("domstate", name, check=False).returncode == 0:
        virsh("destroy", name, check=False)
        virsh("undefine", name, check=False)


def dumpxml(name: str, *, inactive: bool = False) -> ET.Element:
    return ET.fromstring(virsh("dumpxml", name, *(["--inactive"] if inactive else [])).stdout)


def user_aliases(domain: ET.Element) -> set[str]:
    return {a.get("name", "") for a in domain.iter("alias") if a.get("name", "").startswith("ua-")}


def wait_report(serial_log: Path, predicate: Callable[[GuestReport], bool], *, timeout: float = 90) -> GuestReport:
    """The guest's latest report once it satisfies ``predicate`` (AssertionError on timeout)."""
    deadline = time.monotonic() + timeout
    latest: GuestReport | None = None
    while time.monotonic() < deadline:
        text = serial_log.read_text(errors="replace") if serial_log.exists() else ""
        reports = parse_reports(text)
        latest = reports[-1] if reports else None
        if latest is not None and predicate(latest):
            return latest
        time.sleep(0.2)
    tail = "\n".join(serial_log.read_text(errors="replace").splitlines()[-30:]) if serial_log.exists() else ""
    raise AssertionError(f"no guest report satisfied the check within {timeout:g} s; latest: {latest}\n{tail}")


def wait_serial(serial_log: Path, text: str, *, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serial_log.exists() and text in serial_log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} did not appear on the guest's console within {timeout:g} s")


def state_devices(state: Path) -> list[Mapping[str, Any]]:
    """The sandbox's devices as JSON, read as vmdev reads its state (a snapshot and journal lines)."""
    from vmdev.state import StateFile, record_to_json

    return [record_to_json(record) for record in StateFile(state).load().devices]
