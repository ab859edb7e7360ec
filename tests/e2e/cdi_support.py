"""vmdev-cdi in real guests: CDI specs the real ``vmdev plan`` reads, and the nested-VFIO rig.

Block: a loop device named only by a CDI spec (and a ``cdi.k8s.io/`` annotation or
``--cdi-device``) is planned by the real CLI and booted by the rig; the guest finds the disk by
the serial the plan gave it.

VFIO: the L1 machine of :mod:`vfio_support` boots and runs :func:`guest_scenario` inside itself
(this very file, with the host's Python): it binds the edu function behind L1's root port
00:05.0 to vfio-pci, writes a CDI spec naming that function's ``/dev/vfio/<group>``, plans an OCI
spec whose only device request is the ``cdi.k8s.io/`` annotation (root port and bridge port), and
runs each plan's QEMU options as a nested, firmware-only L2 guest whose QEMU reports its PCI tree.
The guest's PCI tree is compared with the guest PCI paths of the plan's guest-side CDI spec.

The guest-side part uses the standard library only (and :mod:`vfio_support`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import vfio_support
from vfio_support import RESULT, L1Run

#: the function the scenario passes: edu behind L1's root port 00:05.0 (its own IOMMU group)
EDU_BDF = "0000:02:00.0"
EDU_IDS = ("0x1234", "0x11e8")
CDI_KIND = "example.com/edu"
CDI_NAME = "example.com/edu=0"
#: the settings the scenario plans with (Kata's configuration.toml keys)
PLAN_CONFIGS: dict[str, str] = {
    "root-port": '[hypervisor.qemu]\ncold_plug_vfio = "root-port"\n',
    "bridge-port": '[hypervisor.qemu]\ncold_plug_vfio = "bridge-port"\n',
}


# --- host side: block ------------------------------------------------------------------------------
def write_spec(directory: Path, name: str, document: Mapping[str, Any]) -> Path:
    """A CDI spec file (JSON) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(document, indent=2))
    return path


def disk_spec(kind: str, device: str, container_path: str, host_node: str, permissions: str = "") -> dict[str, Any]:
    """A CDI spec whose one device injects the host block node ``host_node`` as ``container_path``."""
    node: dict[str, Any] = {"path": container_path, "hostPath": host_node}
    if permissions:
        node["permissions"] = permissions
    return {"cdiVersion": "0.5.0", "kind": kind,
            "devices": [{"name": device, "containerEdits": {"deviceNodes": [node]}}],
            "containerEdits": {"env": ["STORAGE_VENDOR=example"]}}


def annotated_config(directory: Path, annotations: Mapping[str, str]) -> Path:
    """An OCI config.json whose only device requests are its annotations."""
    config = directory / "config.json"
    config.write_text(json.dumps({"ociVersion": "1.1.0", "annotations": dict(annotations),
                                  "process": {"env": ["PATH=/bin"]}}))
    return config


# --- host side: the nested VFIO rig -----------------------------------------------------------------
def run_l1(out_dir: Path, *, timeout: float = 600.0, qemu: str = "qemu-system-x86_64") -> L1Run:
    """Boot vfio_support's L1 machine and run this file's :func:`guest_scenario` inside it."""
    from vmdev_rig import default_cache_dir, ensure_kernel

    cache = default_cache_dir()
    kernel = ensure_kernel(cache, "generic")
    initramfs = vfio_support.build_l1_initramfs(kernel, cache)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, 0o777)
    serial = out_dir / "serial.log"
    append = (f"console=ttyS0 quiet panic=-1 intel_iommu=on vf.python={sys.executable} "
              f"vf.script={Path(__file__).resolve()}")
    command = [
        qemu, "-nodefaults", "-no-user-config", "-nographic", "-accel", "tcg", "-no-reboot",
        "-serial", f"file:{serial}", "-kernel", str(kernel.vmlinuz), "-initrd", str(initramfs),
        "-append", append, *vfio_support.l1_machine_args(out_dir),
    ]
    started = time.monotonic()
    with open(out_dir / "qemu.log", "wb") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    result_file = out_dir / RESULT
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    return L1Run(rc=rc, serial=_read(serial), stderr=_read(out_dir / "qemu.log"),
                 seconds=time.monotonic() - started, result=result, command=command)


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


def pci_paths(query_pci: Mapping[str, Any]) -> dict[str, str]:
    """QEMU's PCI tree (``query-pci``) as qdev id -> guest PCI path (slots from the root bus)."""
    found: dict[str, str] = {}

    def walk(devices: Sequence[Mapping[str, Any]], prefix: tuple[int, ...]) -> None:
        for device in devices:
            path = (*prefix, int(device["slot"]))
            if device.get("qdev_id"):
                found[str(device["qdev_id"])] = "/".join(f"{slot:02x}" for slot in path)
            walk(device.get("pci_bridge", {}).get("devices", []), path)

    for bus in query_pci["return"]:
        walk(bus["devices"], ())
    return found


# --- guest side (inside L1) -------------------------------------------------------------------------
def guest_scenario() -> dict[str, Any]:
    """Bind edu, name its group in a CDI spec only, plan, run each plan as an L2 guest."""
    vmdev = vfio_support.vmdev_command()
    work = Path("/run/work")
    spec_dir = Path("/run/cdi-specs")
    work.mkdir(exist_ok=True)
    result: dict[str, Any] = {"uname": os.uname().release}
    result["bind"] = vfio_support.bind_to_vfio([EDU_BDF])
    facts = vfio_support.pci_facts()[EDU_BDF]
    result["edu"] = facts
    group = facts["iommu_group"]
    write_spec(spec_dir, "example-edu.json", {
        "cdiVersion": "0.5.0", "kind": CDI_KIND,
        "devices": [{"name": "0", "containerEdits": {"deviceNodes": [{"path": f"/dev/vfio/{group}"}]}}],
        "containerEdits": {"env": ["EDU_VISIBLE=all"]},
    })
    config = annotated_config(work, {"cdi.k8s.io/edu": CDI_NAME})
    plans: dict[str, Any] = {}
    sessions: dict[str, Any] = {}
    for name, toml in PLAN_CONFIGS.items():
        settings = work / f"{name}.toml"
        settings.write_text(toml)
        run = vfio_support.sh([vmdev, "plan", "--format", "json", "--memory", "128", "--config", str(settings),
                               "--cdi-spec-dir", str(spec_dir), str(config)])
        run["plan"] = json.loads(run["stdout"]) if run["rc"] == 0 else None
        plans[name] = run
        if run["plan"] is not None:
            qemu_plan = run["plan"]["qemu"]
            sessions[name] = vfio_support.l2_session("qemu-system-x86_64", qemu_plan["argv"], qemu_plan["hotplug"],
                                                     Path(f"/run/seabios-cdi-{name}.log"))
    result["plans"] = plans
    result["l2"] = sessions
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guest", type=Path, required=True, help="run the L1 scenario, write results here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        result = guest_scenario()
    except Exception as exc:  # noqa: BLE001 - the host test reports it
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result["scenario_seconds"] = round(time.monotonic() - started, 2)
    (args.guest / RESULT).write_text(json.dumps(result, indent=1))
    print("VF-RESULT " + shlex.quote(str(args.guest / RESULT)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
