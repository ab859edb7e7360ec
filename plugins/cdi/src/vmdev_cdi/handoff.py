"""Kata's CDI handoff: the OCI spec as the runtime passes it on, and the guest's own CDI names.

After cold plug, Kata's shim deletes every ``cdi.k8s.io/`` annotation (the host's kinds, such as
``nvidia.com/pgpu``, mean nothing in the guest) and, for the VFIO devices it passed through,
adds ``cdi.k8s.io/vfio<N>: <kind>=<index>`` (``/dev/vfio/12`` is ``vfio12``), which the agent
resolves against the guest's ``/var/run/cdi``. Kata leaves writing that guest spec to tooling in
the guest (``nvidia-ctk``) and hopes both sides number the devices alike. vmdev plans the guest's
PCI topology, so it writes the guest spec itself, naming each passed device by the PCI path the
guest will see it at.

Kinds come from runtime-rs' table (vendor and class prefix: NVIDIA, Intel, AMD GPUs, Mellanox
NICs); a device of any other kind is named ``vmdev.io/vfio`` (Kata skips those). Indexes count
per kind in guest PCI path order (runtime-rs; Kata's Go runtime counts across kinds in port-name
order).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from vmdev_cdi.annotations import ANNOTATION_PREFIX
from vmdev_cdi.edits import apply_edits
from vmdev_cdi.model import ContainerEdits, Device, SpecDocument, to_go
from vmdev_cdi.names import parse_qualifier
from vmdev_cdi.pcipath import guest_pci_paths
from vmdev_cdi.registry import DEFAULT_DYNAMIC_DIR
from vmdev_cdi.spec import generate_spec_name, new_spec
from vmdev_cdi.version import minimum_required_version

#: runtime-rs' cdi_devices table: the first 12 characters of "<vendor>-<class>"
KATA_KINDS: Final = {
    "0x10de-0x030": "nvidia.com/gpu",
    "0x8086-0x030": "intel.com/gpu",
    "0x1002-0x030": "amd.com/gpu",
    "0x15b3-0x020": "nvidia.com/nic",
}
FALLBACK_KIND: Final = "vmdev.io/vfio"
PCI_PATH_ANNOTATION: Final = "vmdev.io/pci-path"
HOST_BDF_ANNOTATION: Final = "vmdev.io/host-bdf"
HOST_PATH_ANNOTATION: Final = "vmdev.io/host-path"
CONTROL_NODE: Final = "/dev/vfio/vfio"
#: where the agent looks for the guest's spec files
GUEST_SPEC_DIR: Final = DEFAULT_DYNAMIC_DIR


def kind_for(vendor: str, class_: str) -> str:
    """The guest-side CDI kind of a PCI function (Kata's table, else ``vmdev.io/vfio``)."""
    return KATA_KINDS.get(f"{vendor}-{class_}"[:12], FALLBACK_KIND)


def annotation_suffix(container_path: str) -> str:
    """``vfio12`` for ``/dev/vfio/12``, ``vfio3`` for ``/dev/vfio/devices/vfio3``."""
    return "vfio" + posixpath.basename(container_path).removeprefix("vfio")


@attrs.frozen(kw_only=True)
class Passed:
    """One VFIO request of the plan as the guest will see it."""

    container_path: str
    kind: str
    bdfs: tuple[str, ...]
    pci_paths: tuple[str, ...] | None
    ids: tuple[str, ...]

    @property
    def key(self) -> str:
        return ANNOTATION_PREFIX + annotation_suffix(self.container_path)

    def order(self) -> tuple[Any, ...]:
        if self.pci_paths:
            return (0, tuple(tuple(int(s, 16) for s in p.split("/")) for p in self.pci_paths))
        return (1, self.container_path)


def passed_devices(
    plan_json: Mapping[str, Any], argv: Sequence[str] | None, machine_type: str
) -> list[Passed]:
    """The plan's VFIO requests (the control node aside) with their guest PCI paths when known."""
    out = []
    for device in plan_json.get("devices", []):
        path = device.get("container_path") or ""
        if device.get("kind") != "vfio" or not path.startswith("/dev/vfio/") or path == CONTROL_NODE:
            continue
        functions = device.get("functions") or []
        placement = device.get("placement") or []
        paths = guest_pci_paths(argv, machine_type, placement) if argv is not None and placement else None
        first = functions[0] if functions else {}
        out.append(Passed(
            container_path=path,
            kind=kind_for(str(first.get("vendor_id", "")), str(first.get("class", ""))),
            bdfs=tuple(str(f.get("bdf", "")) for f in functions),
            pci_paths=tuple(paths) if paths is not None else None,
            ids=tuple(str(f.get("id", "")) for f in functions),
        ))
    return out


def guest_names(passed: Sequence[Passed]) -> dict[str, tuple[str, int]]:
    """Container path -> (kind, index): indexes per kind, in guest PCI path order."""
    out: dict[str, tuple[str, int]] = {}
    for kind in sorted({p.kind for p in passed}):
        for index, item in enumerate(sorted((p for p in passed if p.kind == kind), key=Passed.order)):
            out[item.container_path] = (kind, index)
    return out


def guest_specs(passed: Sequence[Passed], names: Mapping[str, tuple[str, int]]) -> list[dict[str, Any]]:
    """One CDI spec per kind for the guest's ``/var/run/cdi``: each device named by its index and
    carrying its guest PCI path (annotation and environment), validated as any spec is."""
    out = []
    for kind in sorted({kind for kind, _ in names.values()}):
        devices = []
        for item in sorted((p for p in passed if names[p.container_path][0] == kind),
                           key=lambda p: names[p.container_path][1]):
            suffix = annotation_suffix(item.container_path).upper()
            annotations = {HOST_PATH_ANNOTATION: item.container_path,
                           HOST_BDF_ANNOTATION: ",".join(item.bdfs)}
            env = [f"VMDEV_{suffix}_HOST_BDF={','.join(item.bdfs)}"]
            if item.pci_paths is not None:
                unique = ",".join(dict.fromkeys(item.pci_paths))
                annotations[PCI_PATH_ANNOTATION] = unique
                env.append(f"VMDEV_{suffix}_PCI_PATH={unique}")
            devices.append(Device(name=str(names[item.container_path][1]), annotations=annotations,
                                  container_edits=ContainerEdits(env=env)))
        doc = SpecDocument(kind=kind, devices=devices)
        doc = attrs.evolve(doc, cdi_version=minimum_required_version(doc))
        vendor, class_ = parse_qualifier(kind)
        path = posixpath.join(GUEST_SPEC_DIR, generate_spec_name(vendor, class_) + ".json")
        new_spec(doc, path, 0)
        out.append({"path": path, "spec": to_go(doc)})
    return out


def container_edits(edits: ContainerEdits) -> dict[str, Any]:
    """The edits that stay with the container (all but device nodes), in OCI form."""
    fragment: dict[str, Any] = {}
    apply_edits(fragment, attrs.evolve(edits, device_nodes=()))
    return fragment


def runtime_spec(document: Mapping[str, Any], guest_annotations: Mapping[str, str]) -> dict[str, Any]:
    """The edited OCI spec without the host's ``cdi.k8s.io/`` annotations, with the guest's."""
    out = dict(document)
    if "annotations" in out or guest_annotations:
        current = out.get("annotations") or {}
        kept = {k: v for k, v in current.items() if not k.startswith(ANNOTATION_PREFIX)}
        kept.update(guest_annotations)
        out["annotations"] = kept
    return out
