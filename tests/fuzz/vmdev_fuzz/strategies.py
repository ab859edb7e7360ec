"""Hypothesis strategies: one per input surface, each drawing :class:`~vmdev_fuzz.cases.PlanCase`
or :class:`~vmdev_fuzz.cases.RawCase` values.

Numbers come from small pools so that requests, sysfs entries and nodes meet (and sometimes just
miss each other); text comes from :mod:`vmdev_fuzz.text`. Every surface draws the backend from the
installed ones and hot or cold plug.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, Final

from hypothesis import strategies as st

from vmdev.declared import BOOLEAN, INTEGER, NUMBER, RUNTIME, STRING, STRINGS, TABLE, TABLES, Setting
from vmdev.plugins import PluginManager, get_plugin_manager
from vmdev_fuzz import hosts as h
from vmdev_fuzz import text
from vmdev_fuzz.cases import PlanCase, RawCase

ROOT: Final = h.ROOT
MAJORS: Final = (7, 8, 1, 10, 259, 250, 254, 246, 241, 242)
MINORS: Final = (0, 1, 7, 99)
MACHINES: Final = (None, "q35", "q35", "pc", "microvm", "virt", "s390-ccw-virtio", "pseries")
BLOCK_DRIVERS: Final = ("virtio-blk", "virtio-scsi", "virtio-mmio", "nvdimm", "virtio-blk-ccw", "virtio-pmem",
                        "virtio-blk-pci", "ide", "")
BLOCK_FILE_OPTION: Final = "io.katacontainers.fs-opt.block_device"
VFIO_PORTS: Final = ("no-port", "root-port", "switch-port", "bridge-port", "no-port", "root-port", "", "rootport")
#: every backend a plan may be for, when no plugin manager is at hand
FALLBACK_BACKENDS: Final = ("qemu", "cloud-hypervisor", "firecracker")


@cache
def plugins() -> PluginManager:
    """The plugin manager of the installed distributions (loaded once)."""
    return get_plugin_manager()


def backends() -> tuple[str, ...]:
    names = tuple(sorted(plugins().backends().names()))
    return names or FALLBACK_BACKENDS


def hypervisor() -> st.SearchStrategy[str]:
    """An installed backend (looked up when the first case is drawn, not at import)."""
    return st.deferred(lambda: st.sampled_from(backends()))


def machine_for(hv: str) -> st.SearchStrategy[Any]:
    return st.sampled_from(MACHINES) if hv == "qemu" else st.sampled_from([None, None, "q35"])


# --- hostility --------------------------------------------------------------------------------------
class Axes:
    """Which part of a case is hostile: one axis (or all, or none), so that most cases reach deep
    code with one thing wrong instead of failing at the first of many."""

    def __init__(self, draw: st.DrawFn | None, names: Sequence[str]) -> None:
        self.hostile = draw(st.sampled_from([None, "all", *names, *names])) if draw is not None else "all"

    def pick(self, axis: str, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(good, bad) if self.hostile in (axis, "all") else good


#: every axis hostile (for strategies that draw no axes of their own)
EVERYTHING: Final = Axes(None, ())


# --- small pieces ----------------------------------------------------------------------------------
def numbers() -> st.SearchStrategy[tuple[int, int]]:
    return st.tuples(st.sampled_from(MAJORS), st.sampled_from(MINORS))


PLAIN_DEVNAMES: Final = ("sda", "vdb", "loop0", "loop1", "nvme0n1", "fuse", "null", "dm-0", "sr0", "xvdc")


def devname(axes: Axes) -> st.SearchStrategy[str]:
    """Mostly names the kernel would give, sometimes hostile ones."""
    hostile = st.one_of(
        st.sampled_from(["sda", "vdb"]).map(lambda n: n + ",readonly=on"),
        text.mild_name(), text.name(), text.path("").map(lambda p: p.lstrip("/")),
        st.sampled_from(["../../etc/shadow", "/etc/shadow", "a/../../b", ".", "", "vfio/../sda"]),
    )
    return axes.pick("devname", st.sampled_from(PLAIN_DEVNAMES), hostile)


def container_path(axes: Axes, prefix: str = "/dev/") -> st.SearchStrategy[str]:
    plain = st.builds(lambda w, n: f"{prefix}{w}{n}", st.sampled_from(["xvd", "disk", "data", "c"]),
                      st.integers(0, 99))
    return axes.pick("path", plain, text.path(prefix))


def file_spec(*, good: st.SearchStrategy[str], axes: Axes | None = None, axis: str = "") -> st.SearchStrategy[h.FileSpec]:
    """A host attribute file: ``good`` text, or (on the hostile axis) anything a broken host holds."""
    odd = st.one_of(
        st.builds(h.FileSpec.text, text.any_text()),
        st.builds(h.FileSpec, st.just(h.BYTES), st.binary(max_size=16).map(lambda b: b + b"\xff\xfe")),
        st.builds(h.FileSpec, st.sampled_from([h.DIRECTORY, h.FIFO, h.SYMLINK_LOOP, h.DANGLING, h.MISSING,
                                               h.HUGE])),
    )
    good_spec = st.builds(h.FileSpec.text, good)
    if axes is None:
        return st.one_of(good_spec, good_spec, odd)
    return axes.pick(axis, good_spec, odd)


def number_text() -> st.SearchStrategy[str]:
    """What ``int()`` might be handed from sysfs."""
    return st.one_of(
        st.integers(min_value=0, max_value=2**40).map(lambda n: f"{n}\n"),
        st.sampled_from(["²\n", "٣\n", "9" * 5000, "-1\n", "", "\n", "0x10\n", " 8 \n", "8\x00\n", "1e3\n",
                         "18446744073709551616\n", "+8\n", "8_000\n"]),
    )


def allow_rules(axes: Axes) -> st.SearchStrategy[list[Any]]:
    good = st.fixed_dictionaries({"allow": st.just(True), "type": st.sampled_from(["b", "c", "a"]),
                                  "major": st.sampled_from(MAJORS), "minor": st.sampled_from(MINORS),
                                  "access": st.sampled_from(["rwm", "r", "rm"])})
    rule = st.fixed_dictionaries(
        {"allow": st.sampled_from([True, True, False, "yes", None])},
        optional={
            "type": st.sampled_from(["b", "c", "a", "", "p", 5, None]),
            "major": st.one_of(st.sampled_from(MAJORS), st.sampled_from([-1, None, "8", 2**64])),
            "minor": st.one_of(st.sampled_from(MINORS), st.sampled_from([-1, None, 1.5])),
            "access": st.one_of(st.sampled_from(["rwm", "r", "rm", "", "w", None]), st.integers(), text.name()),
        },
    )
    junk: st.SearchStrategy[Any] = st.sampled_from([None, 1, "rule", []])
    return axes.pick("rules", st.lists(good, max_size=3), st.lists(st.one_of(rule, rule, junk), max_size=3))


def device_entry(path: st.SearchStrategy[str], dev_type: st.SearchStrategy[str],
                 nums: st.SearchStrategy[tuple[int, int]], axes: Axes) -> st.SearchStrategy[dict[str, Any]]:
    def make(p: str, t: str, n: tuple[int, int], extra: dict[str, Any]) -> dict[str, Any]:
        return {"path": p, "type": t, "major": n[0], "minor": n[1], **extra}

    good = st.fixed_dictionaries({}, optional={"fileMode": st.just(0o666), "uid": st.just(0), "gid": st.just(0)})
    bad = st.fixed_dictionaries({}, optional={
        "fileMode": st.sampled_from([0o666, 0o20666, 0o60660, 0o10644, 0o177777, 2**20]),
        "uid": st.sampled_from([0, 1000, -1, 2**32]),
        "gid": st.sampled_from([0, 1000, 2**31]),
    })
    return st.builds(make, path, dev_type, nums, axes.pick("extra", good, bad))


def oci(devices: Sequence[Any], rules: Sequence[Any] = (), mounts: Sequence[Any] = ()) -> dict[str, Any]:
    doc: dict[str, Any] = {"ociVersion": "1.0.2", "linux": {"devices": list(devices)}}
    if rules:
        doc["linux"]["resources"] = {"devices": list(rules)}
    if mounts:
        doc["mounts"] = list(mounts)
    return doc


def unique_paths(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Requests with distinct container paths (a path requested twice is refused before anything)."""
    seen: set[Any] = set()
    out = []
    for request in requests:
        if request.get("path") not in seen:
            seen.add(request.get("path"))
            out.append(request)
    return out


@st.composite
def _common(draw: st.DrawFn, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    hv = draw(hypervisor())
    return {"hypervisor": hv, "hotplug": draw(st.booleans()), "machine": draw(machine_for(hv)),
            "options": dict(options or {})}


def block_driver_for(hv: str, axes: Axes) -> st.SearchStrategy[str]:
    good = {"firecracker": ["virtio-mmio", ""], "cloud-hypervisor": ["virtio-blk", ""]}.get(
        hv, ["virtio-blk", "virtio-scsi", ""])
    return axes.pick("settings", st.sampled_from(good), st.sampled_from(BLOCK_DRIVERS))


def machine_choice(hv: str, axes: Axes) -> st.SearchStrategy[Any]:
    return axes.pick("machine", st.sampled_from([None, "q35"]), machine_for(hv))


# --- surface: OCI device requests on a sysfs host -------------------------------------------------
@st.composite
def dev_entry(draw: st.DrawFn, axes: Axes, kind: str | None = None) -> h.DevEntry:
    k = kind or draw(st.sampled_from(["block", "char"]))
    major, minor = draw(numbers())
    name = draw(devname(axes))
    node = draw(axes.pick("node", st.just(name), st.one_of(st.none(), devname(axes))))
    own = k if k == "block" else h.NODE_CHAR
    node_kind = draw(axes.pick("node", st.just(own), st.sampled_from(h.NODE_KINDS)))
    rdev = draw(axes.pick("node", st.none(), numbers()))
    uevent = draw(axes.pick("uevent", st.none(), st.one_of(
        file_spec(good=st.just(f"DEVNAME={name}\n")),
        st.builds(h.FileSpec.text, st.sampled_from([
            f"MAJOR={major}\nMINOR={minor}\n", f"DEVNAME = '{name}' # c\n", "garbage\n",
            f"DEVNAME=../../etc/{name}\n", "DEVNAME=/etc/shadow\n", "DEVNAME=\n", f"DEVNAME={name}\nDEVNAME=sda\n",
            f"DEVNAME: {name}\n", f"DEVNAME=\"{name} \"\n", f"DEVNAME={name}\u2028\n"])))))
    return h.DevEntry(kind=k, major=major, minor=minor, devname=name, uevent=uevent, node=node,
                      node_kind=node_kind, node_rdev=rdev)


@st.composite
def oci_devices(draw: st.DrawFn) -> PlanCase:
    """``linux.devices`` (+ allow rules) against a host whose sysfs and ``/dev`` may disagree."""
    axes = Axes(draw, ["path", "devname", "node", "uevent", "rules", "extra", "numbers", "machine"])
    entries = draw(st.lists(dev_entry(axes), max_size=3, unique_by=lambda e: (e.kind, e.major, e.minor)))
    requests = []
    for entry in entries:
        if draw(st.integers(0, 3)):
            types = ["b", "c", "u"] if entry.kind == "char" else ["b"]
            dev_type = draw(axes.pick("numbers", st.sampled_from(types[:1]), st.sampled_from([*types, "c", "p"])))
            nums = draw(axes.pick("numbers", st.just((entry.major, entry.minor)), numbers()))
            requests.append(draw(device_entry(container_path(axes), st.just(dev_type), st.just(nums), axes)))
    requests += draw(st.lists(device_entry(container_path(axes), st.sampled_from(["b", "c", "u", "p"]), numbers(),
                                           axes), max_size=1))
    common = draw(_common())
    common["options"] = {"block_device_driver": draw(block_driver_for(common["hypervisor"], axes))}
    common["machine"] = draw(machine_choice(common["hypervisor"], axes))
    return PlanCase(host=h.HostSpec(devices=tuple(entries)), document=oci(unique_paths(requests),
                                                                          draw(allow_rules(axes))), **common)


# --- surface: block devices in sysfs (loop devices, sizes, holders, mounts of the host) -----------
def file_name(axes: Axes, axis: str) -> st.SearchStrategy[str]:
    plain = st.builds(lambda w, n: f"{w}{n}.img", st.sampled_from(["disk", "img", "data"]), st.integers(0, 9))
    return axes.pick(axis, plain, st.one_of(text.mild_name(), text.name(), text.long_text()))


@st.composite
def loop_entry(draw: st.DrawFn, minor: int, axes: Axes) -> h.DevEntry:
    backing_path = ROOT + "/files/" + draw(file_name(axes, "backing-name"))
    shape = draw(axes.pick("backing", st.just("kernel"), st.sampled_from(
        ["kernel", "no-newline", "spaces", "two-lines", "bytes", "odd"])))
    content: h.FileSpec
    if shape == "kernel":
        content = h.FileSpec.text(backing_path + "\n")
    elif shape == "no-newline":
        content = h.FileSpec.text(backing_path)
    elif shape == "spaces":
        content = h.FileSpec.text(" " + backing_path + " \n")
    elif shape == "two-lines":
        content = h.FileSpec.text(backing_path + "\nsecond\n")
    elif shape == "bytes":
        content = h.FileSpec(h.BYTES, backing_path.encode("utf-8", "surrogatepass") + b"\xff\n")
    else:
        content = draw(file_spec(good=st.just(backing_path + "\n")))
    target = draw(axes.pick("backing", st.just(h.FileSpec.text("x" * 4096)), st.sampled_from(
        [h.FileSpec.text("x" * 512), h.FileSpec(h.FIFO), h.FileSpec(h.MISSING), h.FileSpec(h.DIRECTORY)])))
    dev_numbers = st.builds(lambda a, b: f"{a}:{b}\n", st.sampled_from(MAJORS), st.sampled_from(MINORS))
    size = axes.pick("size", st.just(h.FileSpec.text("8\n")), st.one_of(
        st.none(), st.builds(h.FileSpec.text, number_text()), file_spec(good=st.just("8\n"))))
    stacked = st.lists(st.tuples(file_name(axes, "holders"), file_spec(good=dev_numbers, axes=axes, axis="holders")),
                       max_size=2)
    return h.DevEntry(
        kind="block", major=7, minor=minor, devname=f"loop{minor}", node=f"loop{minor}",
        node_kind=draw(axes.pick("node", st.just(h.NODE_BLOCK), st.sampled_from([h.NODE_REGULAR, h.NODE_CHAR]))),
        size=draw(size), backing_path=backing_path, backing=content, backing_target=target,
        partitions=tuple(draw(stacked)), holders=tuple(draw(stacked)),
    )


def mountinfo() -> st.SearchStrategy[h.FileSpec]:
    line = st.builds(
        lambda n, point, opts: f"36 35 7:{n} / {point} rw,noatime shared:1 - ext4 /dev/loop{n} {opts}\n",
        st.sampled_from(MINORS), text.name().map(lambda t: "/" + t.replace(" ", "\\040")),
        st.sampled_from(["rw", "ro", "rw,errors=remount-ro", ""]))
    junk = st.sampled_from(["\n", "36 35 7:0\n", "a b c - d\n", "1 2 x:y / / rw - e f rw\n"])
    return file_spec(good=st.lists(st.one_of(line, junk), max_size=4).map("".join))


@st.composite
def block_sysfs(draw: st.DrawFn) -> PlanCase:
    """``b`` requests for loop devices whose sysfs attributes are anything a host could show."""
    axes = Axes(draw, ["path", "backing", "backing-name", "size", "holders", "mountinfo", "rules", "settings",
                       "node", "extra", "machine"])
    minors = draw(st.lists(st.sampled_from(MINORS), min_size=1, max_size=2, unique=True))
    entries = [draw(loop_entry(minor, axes)) for minor in minors]
    requests = unique_paths([draw(device_entry(container_path(axes), st.just("b"), st.just((7, minor)), axes))
                             for minor in minors])
    common = draw(_common())
    hv = common["hypervisor"]
    common["machine"] = draw(machine_choice(hv, axes))
    common["options"] = {
        "block_device_driver": draw(block_driver_for(hv, axes)),
        "block_device_aio": draw(axes.pick("settings", st.just(""), st.sampled_from(["io_uring", "native", "threads"]))),
        "block_device_cache_set": draw(st.booleans()),
        "block_device_cache_direct": draw(st.booleans()),
        "allow_host_mounted_block_devices": draw(st.booleans()),
    }
    host = h.HostSpec(devices=tuple(entries), mountinfo=draw(axes.pick("mountinfo", st.none(), mountinfo())))
    return PlanCase(host=host, document=oci(requests, draw(allow_rules(axes))), **common)


# --- surface: mounts ---------------------------------------------------------------------------
MOUNT_KINDS: Final = ("block", "file", "pmem", "plain-dir")
ODD_SOURCES: Final = ("fifo", "missing", "loop")


@st.composite
def mount_case(draw: st.DrawFn) -> PlanCase:
    """OCI mounts whose sources are block nodes, image files, directories on loop devices (with or
    without a persistent-memory signature), FIFOs, loops of symlinks or nothing."""
    axes = Axes(draw, ["destination", "source-name", "source", "options", "settings", "proc", "pmem", "machine"])
    mounts, files, stats, devices = [], [], [], []
    for index in range(draw(st.integers(1, 3))):
        source = ROOT + f"/mnt/{index}" + draw(file_name(axes, "source-name"))
        kind = draw(axes.pick("source", st.sampled_from(MOUNT_KINDS), st.sampled_from(MOUNT_KINDS + ODD_SOURCES)))
        good_options = st.sampled_from([[BLOCK_FILE_OPTION + "=file"], ["ro", BLOCK_FILE_OPTION], ["rbind"], ["ro"]])
        options = draw(axes.pick("options", good_options, st.lists(st.sampled_from(
            ["ro", "rw", "rbind", BLOCK_FILE_OPTION, BLOCK_FILE_OPTION + "=file", ",ro", "\n", "ro\u2028"]),
            max_size=3)))
        if kind == "block":
            nums = draw(numbers())
            files.append((source, h.FileSpec.text("")))
            stats.append(h.StatSpec(source, h.NODE_BLOCK, rdev=nums))
            if draw(st.integers(0, 3)):
                devices.append(h.DevEntry(kind="block", major=nums[0], minor=nums[1], devname=f"blk{index}",
                                          node=f"blk{index}", node_rdev=nums))
        elif kind == "file":
            size = draw(axes.pick("source", st.just(8192), st.sampled_from([0, 512, 4096, 8192])))
            files.append((source, h.FileSpec.text("x" * size)))
        elif kind == "pmem":
            minor = 7 + index
            backing = ROOT + "/files/" + draw(file_name(axes, "source-name"))
            files.append((source, h.FileSpec(h.DIRECTORY)))
            stats.append(h.StatSpec(source, h.NODE_DIR, dev=(7, minor)))
            image = draw(axes.pick("pmem", st.just("pmem"), st.sampled_from(["pmem", "plain", "fifo", "missing"])))
            target = {"pmem": h.FileSpec(h.PMEM, "8388608"), "plain": h.FileSpec.text("x" * 8192),
                      "fifo": h.FileSpec(h.FIFO), "missing": h.FileSpec(h.MISSING)}[image]
            devices.append(h.DevEntry(kind="block", major=7, minor=minor, devname=f"loop{minor}",
                                      node=f"loop{minor}", backing_path=backing,
                                      backing=h.FileSpec.text(backing + "\n"), backing_target=target))
        elif kind == "plain-dir":
            files.append((source, h.FileSpec(h.DIRECTORY)))
        else:
            files.append((source, h.FileSpec({"fifo": h.FIFO, "missing": h.MISSING, "loop": h.SYMLINK_LOOP}[kind])))
        destination = draw(axes.pick("destination", st.just(f"/data{index}"), text.path("/")))
        mount_type = draw(axes.pick("options", st.just("bind"), st.sampled_from(["bind", "none", "", "ext4", None, 5])))
        mounts.append({"destination": destination, "source": source, "type": mount_type, "options": options})
    proc_mounts = draw(axes.pick("proc", st.none(), file_spec(good=st.just(""))))
    common = draw(_common())
    hv = common["hypervisor"]
    common["machine"] = draw(machine_choice(hv, axes))
    common["options"] = {"block_device_driver": draw(block_driver_for(hv, axes)),
                         "disable_block_device_use": draw(axes.pick("settings", st.just(False), st.booleans()))}
    host = h.HostSpec(devices=tuple(devices), files=tuple(files), stats=tuple(stats), mounts=proc_mounts)
    return PlanCase(host=host, document=oci([], mounts=mounts), **common)


# --- surface: VFIO (IOMMU groups, PCI attributes, mdevs, AP, cdevs) -------------------------------
def resource_text(axes: Axes) -> st.SearchStrategy[str]:
    good_line = st.builds(lambda s, size, f: f"0x{s:016x} 0x{s + size - 1:016x} 0x{f:016x}\n",
                          st.integers(0, 2**44), st.sampled_from([1, 4096, 1 << 20, 1 << 35]),
                          st.sampled_from([0x40200, 0x40101, 0x14220C, 0x0, 0x2000]))
    bad_line = st.sampled_from(["0x1 0x2\n", "zz zz zz\n", "0x10 0x1 0x200\n", "0x" + "f" * 40 + " 0x0 0x200\n",
                                "0x0 0x" + "f" * 40 + " 0x200\n", "1 2 3 4\n", "0x1 0x2 0x3\x00\n", "² ² ²\n",
                                "-0x1 0x0 0x200\n", "0x1_0 0x2_0 0x200\n"])
    return axes.pick("resource", st.lists(good_line, max_size=7).map("".join),
                     st.lists(st.one_of(good_line, bad_line), max_size=7).map("".join))


@st.composite
def pci_spec(draw: st.DrawFn, bdf: str, group: int, axes: Axes) -> h.PciSpec:
    def attr(axis: str, good: str, odd: Sequence[str]) -> st.SearchStrategy[h.FileSpec | None]:
        return axes.pick(axis, st.just(h.FileSpec.text(good)),
                         st.none() | file_spec(good=st.sampled_from([good, *odd])))

    return h.PciSpec(
        bdf=bdf,
        driver=draw(axes.pick("driver", st.sampled_from(["vfio-pci", "mlx5_vfio_pci"]),
                              st.sampled_from(["vfio-pci", "e1000e", "pcieport", None, "a,b", "x\ny"]))),
        group=group,
        vendor=draw(attr("ids", "0x8086\n", ["0x8086,x=y\n", "\n"])),
        device=draw(attr("ids", "0x10d3\n", ["²\n"])),
        class_code=draw(attr("class", "0x020000\n", ["0x060400\n", "0x060000\n", "0x068000\n",
                                                     "0x" + "f" * 70 + "\n", "²\n", "0x\n", "12\n"])),
        numa_node=draw(attr("ids", "-1\n", ["0\n", "²\n", "9" * 5000])),
        config_size=draw(axes.pick("config", st.sampled_from([256, 4096]), st.sampled_from([0, 64, 257]))),
        resource=h.FileSpec.text(draw(resource_text(axes))) if axes.hostile not in ("resource-file", "all")
        else draw(file_spec(good=resource_text(axes))),
        vfio_dev=draw(st.booleans()),
    )


UUIDS: Final = ("8a5f2e9c-0d3c-4f6a-9b1e-2d7c8e9f0a1b", "00000000-0000-0000-0000-000000000000")
BDFS: Final = ("0000:00:03.0", "0000:01:00.0", "0000:01:00.1", "0000:03:01.0", "0000:03:02.0", "0001:00:00.0")
#: what a group's PCI functions are in when the group itself holds an mdev or an AP matrix device
#: (the parent of an mdev is in an IOMMU group of its own)
PARENT_GROUP_OFFSET: Final = 20


def vfio_group_entry(group: int, numbers: tuple[int, int], axes: Axes) -> st.SearchStrategy[h.VfioGroupSpec | None]:
    """The group's ``class/vfio/<group>``: mostly with the numbers of its node, on the hostile axis
    missing, with other numbers, or a ``dev`` file that is no ``MAJOR:MINOR`` (or no file)."""
    major, minor = numbers
    right = st.just(h.VfioGroupSpec(group, major, minor))
    wrong = st.builds(h.VfioGroupSpec, st.just(group), st.sampled_from([major, major, 250, 10, 0]),
                      st.sampled_from([minor + 1, 0, 3, group, 2**20 - 1]))
    malformed_text = st.sampled_from([
        "x\n", f"{major}:\n", "", "\n", f":{minor}\n", f"{major}:{minor}", f" {major}:{minor} \n",
        f"{major}:{minor}\n{major}:{minor}\n", f"{major}:{10**11}\n", f"{2**64}:{minor}\n", "9" * 5000,
        f"{major}:-1\n", "²:²\n", f"{major}:{minor}\x00\n", f"{major}:{minor}\u2028", f"0x{major:x}:{minor}\n",
        f"{major},{minor}\n", f"{major}:{minor}:0\n"])
    odd_file = st.one_of(
        st.builds(h.FileSpec, st.sampled_from([h.FIFO, h.SYMLINK_LOOP, h.DIRECTORY, h.DANGLING, h.MISSING, h.HUGE])),
        st.builds(h.FileSpec, st.just(h.BYTES), st.sampled_from([b"\xff\xfe\n", f"{major}:{minor}\xff\n".encode()])))
    malformed = st.builds(h.VfioGroupSpec, st.just(group), st.just(major), st.just(minor),
                          st.one_of(st.builds(h.FileSpec.text, malformed_text), odd_file))
    return axes.pick("class-vfio", right, st.one_of(malformed, wrong, st.none()))


@st.composite
def group_shape(draw: st.DrawFn, group: int, bdfs: Sequence[str], axes: Axes) -> tuple[str, list[h.GroupEntry]]:
    """What VFIO device the group is: its PCI functions (``pci``), one mdev of the first function
    (``mdev``) or one AP matrix device (``ap``); with the mdev and AP the functions sit in another group."""
    shape = draw(st.sampled_from(["pci", "pci", "mdev", "ap"]))
    if shape == "mdev":
        return shape, [h.GroupEntry(group, draw(st.sampled_from(UUIDS)), "mdev", parent=bdfs[0])]
    if shape == "ap":
        queues = draw(axes.pick("entries", st.just(h.FileSpec.text("05.001f\n")), file_spec(
            good=st.sampled_from(["05.001f\n", "05.001f\n06.0020\n", "", "zz.zzzz\n", "5.1f\n"]))))
        return shape, [h.GroupEntry(group, draw(st.sampled_from(UUIDS)), "ap", queues=queues)]
    return shape, []


@st.composite
def vfio_case(draw: st.DrawFn) -> PlanCase:
    """``/dev/vfio/<group>`` and IOMMUFD cdev requests against groups of PCI functions, an mdev or
    an AP matrix device, whose attributes (resource lines, config size, class, driver links, the
    group's ``class/vfio`` entry) are anything."""
    axes = Axes(draw, ["path", "settings", "class", "resource", "resource-file", "driver", "ids", "config",
                       "entries", "node", "extra", "machine", "class-vfio"])
    group = draw(st.sampled_from([2, 5, 12]))
    bdfs = draw(st.lists(st.sampled_from(BDFS), min_size=1, max_size=3, unique=True))
    shape, members = draw(group_shape(group, bdfs, axes))
    pci_group = group if shape == "pci" else group + PARENT_GROUP_OFFSET
    pci = [draw(pci_spec(bdf, draw(axes.pick("entries", st.just(pci_group), st.sampled_from([pci_group, group + 1]))),
                         axes)) for bdf in bdfs]
    junk = draw(axes.pick("entries", st.just([]), st.lists(st.one_of(
        st.builds(h.GroupEntry, st.just(group), st.sampled_from(UUIDS), st.just("mdev"), st.sampled_from(bdfs)),
        st.builds(h.GroupEntry, st.just(group), st.sampled_from(UUIDS), st.just("ap"), st.just(""),
                  file_spec(good=st.sampled_from(["05.001f\n", "05.001f\n06.0020\n", "", "zz.zzzz\n"]))),
        st.builds(h.GroupEntry, st.just(group), text.name(), st.just("junk")),
    ), max_size=2, unique_by=lambda e: e.name)))
    extra = members + [e for e in junk if e.name not in {m.name for m in members}]
    cdevs = draw(st.lists(st.builds(h.CdevSpec, st.integers(0, 3), st.sampled_from(bdfs),
                                    axes.pick("entries", st.just(True), st.booleans())),
                          max_size=2, unique_by=lambda c: c.number))
    minor = draw(axes.pick("node", st.just(group), st.sampled_from([group, 0, 3])))
    name = draw(axes.pick("node", st.just(f"vfio/{group}"), st.sampled_from(
        [f"vfio/noiommu-{group}", "vfio/vfio", f"vfio/../vfio/{group}", f"vfio/{group},x=y", f"vfio/{group}\u2028"])))
    node = h.DevEntry(kind="char", major=246, minor=minor, devname=name, node=name, node_kind=h.NODE_CHAR)
    vfio_group = draw(vfio_group_entry(group, (246, minor), axes))
    path = axes.pick("path", st.just(f"/dev/vfio/{group}"), text.path("/dev/vfio/"))
    requests = [draw(device_entry(path, axes.pick("extra", st.just("c"), st.sampled_from(["u", "b"])),
                                  st.just((246, minor)), axes))]
    iommufd = bool(cdevs) and draw(st.booleans())
    if iommufd:  # one sandbox uses one VFIO backend: cdevs instead of the group
        requests = [draw(device_entry(st.just(f"/dev/vfio/devices/vfio{c.number}"), st.just("c"),
                                      st.just((249, c.number)), axes)) for c in cdevs]
    # AP matrix devices exist on s390x only, where Kata runs QEMU only (on its s390x machine)
    hv = draw(hypervisor() if shape != "ap" else axes.pick("machine", st.just("qemu"), hypervisor()))
    ports = ["no-port", "root-port"] if hv == "cloud-hypervisor" else ["no-port", "root-port", "switch-port",
                                                                         "bridge-port"]
    hot = draw(axes.pick("settings", st.sampled_from(ports), st.sampled_from(VFIO_PORTS)))
    cold = "no-port" if hot != "no-port" else draw(st.sampled_from(ports))
    options = {"hot_plug_vfio": hot, "cold_plug_vfio": draw(axes.pick("settings", st.just(cold), st.sampled_from(
        VFIO_PORTS))), "pcie_root_port": draw(axes.pick("settings", st.sampled_from([0, 2, 16]),
                                                         st.sampled_from([17, -1, 2**64]))),
               "enable_iommu": draw(axes.pick("settings", st.just(False), st.booleans()))}
    runtime = {"vfio_mode": draw(axes.pick("settings", st.sampled_from(["guest-kernel", "vfio"]),
                                           st.sampled_from(["VFIO", "", 1])))}
    host = h.HostSpec(devices=(node,), pci=tuple(pci), group_entries=tuple(extra), cdevs=tuple(cdevs),
                      vfio_groups=(vfio_group,) if vfio_group is not None else (),
                      iommu_node=draw(axes.pick("entries", st.just(True), st.booleans())))
    machine = machine_choice(hv, axes) if shape != "ap" or hv != "qemu" else axes.pick(
        "machine", st.just("s390-ccw-virtio"), machine_for(hv))
    return PlanCase(hypervisor=hv, hotplug=draw(st.booleans()), machine=draw(machine),
                    options=options, host=host, document=oci(requests), runtime=runtime)


# --- surface: the vhost-user store ----------------------------------------------------------------
@st.composite
def store_case(draw: st.DrawFn) -> PlanCase:
    """``b`` requests with majors 241/242 resolved through a store whose nodes and sockets are
    anything (wrong kinds, missing, links out of the store, names and paths too long)."""
    axes = Axes(draw, ["path", "store-path", "names", "kinds", "settings", "rules", "extra", "fs", "net", "machine"])
    store = ROOT + "/store" + draw(axes.pick("store-path", st.just(""), st.one_of(
        text.mild_name(), text.name(), text.long_text())))
    entries = draw(st.lists(st.builds(
        h.StoreEntry,
        name=axes.pick("names", st.sampled_from(["blk0", "blk1", "scsi0"]), st.one_of(text.mild_name(), text.name())),
        node=axes.pick("kinds", st.just(h.NODE_BLOCK), st.sampled_from([h.NODE_CHAR, h.NODE_REGULAR, h.MISSING])),
        rdev=st.tuples(st.sampled_from([241, 242]), st.sampled_from(MINORS)),
        socket=axes.pick("kinds", st.just(h.NODE_SOCKET), st.sampled_from([h.NODE_REGULAR, h.NODE_DIR, h.MISSING,
                                                                            "outside"])),
        node_link_outside=axes.pick("kinds", st.just(False), st.booleans()),
    ), min_size=1, max_size=3, unique_by=lambda e: e.name))
    known_numbers = [e.rdev for e in entries]
    nums = axes.pick("kinds", st.sampled_from(known_numbers),
                     st.tuples(st.sampled_from([241, 242, 8]), st.sampled_from(MINORS)))
    requests = unique_paths(draw(st.lists(device_entry(container_path(axes), axes.pick(
        "kinds", st.just("b"), st.just("c")), nums, axes), min_size=1, max_size=2)))
    options: dict[str, Any] = {
        "enable_vhost_user_store": draw(axes.pick("settings", st.just(True), st.just(False))),
        "vhost_user_store_path": store,
        "vhost_user_reconnect_timeout_sec": draw(axes.pick("settings", st.sampled_from([0, 1, 5]),
                                                           st.sampled_from([2**32 - 1, 2**32, -1]))),
    }
    if axes.hostile in ("fs", "all") or draw(st.integers(0, 3)) == 0:
        options["shared_fs"] = draw(st.sampled_from(["virtio-fs", "virtio-9p", "none", "virtio-fs-nydus"]))
        options["virtio_fs_socket"] = draw(axes.pick("fs", st.just(ROOT + "/fs.sock"), st.one_of(
            st.just(""), text.path(ROOT + "/"), text.path("/run/"))))
        options["virtio_fs_tag"] = draw(axes.pick("fs", st.just("kataShared"), st.one_of(text.mild_name(),
                                                                                         text.name())))
        options["shared_dir"] = draw(axes.pick("fs", st.just(ROOT + "/shared"), text.path(ROOT + "/")))
        options["virtio_fs_daemon"] = draw(st.sampled_from(["", "/usr/libexec/virtiofsd", "virtiofsd"]))
    if axes.hostile in ("net", "all") or draw(st.integers(0, 3)) == 0:
        options["vhost_user_net"] = [{"socket": draw(axes.pick("net", st.just(ROOT + "/net0.sock"),
                                                                text.path(ROOT + "/"))),
                                      "mac": draw(axes.pick("net", st.just("52:54:00:12:34:56"),
                                                            st.sampled_from(["x", "01:00:00:00:00:00"])))}]
    hv = draw(hypervisor())
    host = h.HostSpec(store=h.StoreSpec(path=store, entries=tuple(entries),
                                        devices_dir=draw(axes.pick("kinds", st.just(True), st.booleans()))))
    return PlanCase(hypervisor=hv, hotplug=draw(st.booleans()), machine=draw(machine_choice(hv, axes)),
                    options=options, host=host, document=oci(requests, draw(allow_rules(axes))))


# --- surface: every declared settings key ---------------------------------------------------------
def toml_value() -> st.SearchStrategy[Any]:
    """Any value a TOML file (or a Python caller) could give a key."""
    scalar = st.one_of(
        st.integers(), st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30]),
        st.floats(allow_nan=True, allow_infinity=True), st.booleans(), text.any_text(), st.datetimes(),
        st.none(),
    )
    return st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text.name(), inner,
                                                                                         max_size=3), max_leaves=6)


def right_value(setting: Setting) -> st.SearchStrategy[Any]:
    """Values of the key's own type: its choices and aliases, edges of its range, hostile text."""
    low = setting.minimum if setting.minimum is not None else -(2**63)
    high = setting.maximum if setting.maximum is not None else 2**64 - 1
    if setting.type == STRING:
        return st.one_of(st.sampled_from([*setting.choices, *setting.aliases, "", str(setting.default)]),
                         text.any_text(), text.path(ROOT + "/"))
    if setting.type == INTEGER:
        edges = [int(low), int(low) - 1, int(high), int(high) + 1, 0, 1, -1, 2**31, 2**32, 10**4301]
        return st.one_of(st.sampled_from(edges), st.integers(min_value=int(low), max_value=int(high)))
    if setting.type == NUMBER:
        return st.one_of(st.floats(allow_nan=True), st.sampled_from([low, high, low - 1, high + 1, 0.5]))
    if setting.type == BOOLEAN:
        return st.booleans()
    if setting.type == STRINGS:
        return st.lists(st.one_of(st.sampled_from([*setting.choices, ""]), text.any_text()), max_size=3)
    if setting.type == TABLE:
        return st.dictionaries(text.name(), toml_value(), max_size=3)
    if setting.type == TABLES:
        entry = st.fixed_dictionaries({}, optional={
            "socket": st.one_of(text.path(ROOT + "/"), toml_value()),
            "mac": st.one_of(st.sampled_from(["52:54:00:12:34:56", "01:00:00:00:00:00", "00:00:00:00:00:00"]),
                             text.name()),
            "msix": st.one_of(st.booleans(), toml_value()),
        })
        return st.lists(st.one_of(entry, st.dictionaries(text.name(), toml_value(), max_size=2)), max_size=3)
    return toml_value()


def declared() -> list[Setting]:
    return [entry.setting for entry in plugins().declared_settings()]


def settings_value(setting: Setting) -> st.SearchStrategy[Any]:
    return st.one_of(right_value(setting), right_value(setting), toml_value())


CORE_KEYS: Final[Mapping[str, Callable[[], st.SearchStrategy[Any]]]] = {
    "machine_type": lambda: st.one_of(st.sampled_from(["q35", "pc", "microvm", "", "q35,accel=kvm", 1.5, 1, True]),
                                      text.name()),
    "default_memory": lambda: st.one_of(st.sampled_from([0, 1, 2048, -1, 2**31, 2**51, 2**64, 1.5, "2048", True]),
                                        st.integers()),
    "hotplug": lambda: st.one_of(st.booleans(), st.sampled_from([0, 1, "true", None])),
}


@st.composite
def settings_case(draw: st.DrawFn, keys: Sequence[str] | None = None) -> PlanCase:
    """A few declared keys (every installed plugin's, or ``keys``) and core keys set to right and
    wrong values, for a small spec (a loop device, /dev/null, /dev/fuse without a node)."""
    hv = draw(hypervisor())
    settings = {s.name: s for s in declared() if s.applies_to(hv)}
    names = sorted(settings) if keys is None else [k for k in keys if k in settings]
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True)) if names else []
    options: dict[str, Any] = {}
    runtime: dict[str, Any] = {}
    for key in chosen:
        value = draw(settings_value(settings[key]))
        (runtime if settings[key].section == RUNTIME else options)[key] = value
    for key in draw(st.lists(st.sampled_from(sorted(CORE_KEYS)), max_size=2, unique=True)) if keys is None else []:
        options[key] = draw(CORE_KEYS[key]())
    loop = h.DevEntry(kind="block", major=7, minor=0, devname="loop0", node="loop0",
                      backing_path=ROOT + "/files/img", backing=h.FileSpec.text(ROOT + "/files/img\n"),
                      backing_target=h.FileSpec.text("x" * 4096), size=h.FileSpec.text("8\n"))
    null = h.DevEntry(kind="char", major=1, minor=3, devname="null", node="null", node_kind=h.NODE_CHAR)
    store = h.StoreSpec(path=ROOT + "/store", entries=(h.StoreEntry(name="vhost-blk0"),))
    requests = [{"path": "/dev/xvda", "type": "b", "major": 7, "minor": 0},
                {"path": "/dev/null", "type": "c", "major": 1, "minor": 3},
                {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]
    if options.get("enable_vhost_user_store") is True:
        options.setdefault("vhost_user_store_path", ROOT + "/store")
        requests.append({"path": "/dev/vhost-blk", "type": "b", "major": 241, "minor": 0})
    return PlanCase(hypervisor=hv, hotplug=draw(st.booleans()), machine=draw(machine_for(hv)), options=options,
                    runtime=runtime, host=h.HostSpec(devices=(loop, null), store=store), document=oci(requests),
                    toml=draw(st.booleans()))


# --- surfaces of raw bytes: config.json and configuration.toml ------------------------------------
def json_value() -> st.SearchStrategy[Any]:
    scalar = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(), text.any_text())
    return st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text.name(), inner,
                                                                                         max_size=3), max_leaves=8)


@st.composite
def oci_document(draw: st.DrawFn) -> Any:
    """An OCI-shaped document whose every part may be of the wrong type or hostile."""
    device = st.fixed_dictionaries({}, optional={
        "path": st.one_of(text.path(), json_value()), "type": st.one_of(st.sampled_from(["b", "c", "u", "p"]),
                                                                         json_value()),
        "major": st.one_of(st.sampled_from(MAJORS), json_value()), "minor": st.one_of(st.sampled_from(MINORS),
                                                                                       json_value()),
        "fileMode": json_value(), "uid": json_value(), "gid": json_value()})
    mount = st.fixed_dictionaries({}, optional={
        "destination": st.one_of(text.path("/"), json_value()), "source": st.one_of(text.path("/"), json_value()),
        "type": st.one_of(st.just("bind"), json_value()), "options": st.one_of(st.lists(text.name()),
                                                                              json_value())})
    linux = st.fixed_dictionaries({}, optional={
        "devices": st.one_of(st.lists(st.one_of(device, json_value()), max_size=3), json_value()),
        "resources": st.one_of(st.fixed_dictionaries({"devices": allow_rules(EVERYTHING)}), json_value())})
    doc = st.fixed_dictionaries({}, optional={
        "linux": st.one_of(linux, json_value()), "mounts": st.one_of(st.lists(mount, max_size=2), json_value()),
        "annotations": st.one_of(st.dictionaries(text.name(), text.any_text(), max_size=2), json_value())})
    return draw(st.one_of(doc, doc, doc, json_value()))


def raw_json() -> st.SearchStrategy[bytes]:
    """What a ``config.json`` file could hold: JSON of hostile documents (surrogates escaped as JSON
    allows), broken bytes, deep nesting, huge numbers."""
    encoded = oci_document().map(lambda d: json.dumps(d, allow_nan=True).encode())
    special: st.SearchStrategy[bytes | str] = st.sampled_from([
        "deep", "digits", b"\xff\xfe{}", b'{"a": NaN}', b"", b"{", b'{"linux": 1e999}',
        b'{"linux": {"devices": [{"path": "/dev/\\ud800", "type": "c", "major": 1, "minor": 3}]}}',
        b'{"mounts": [{"destination": "/x\\u2028y", "source": "/s"}]}', b'"\\udfff"',
        b'{"linux": {"devices": [{"path": "/dev/x\\n", "type": "c", "major": 1, "minor": 3}]}}'])
    mutated = st.builds(lambda data, cut, junk: data[:cut] + junk + data[cut:], encoded, st.integers(0, 200),
                        st.binary(max_size=4))
    return st.one_of(encoded, encoded, special.map(_special_json), mutated)


def _special_json(name: bytes | str) -> bytes:
    """Documents too large to show in a strategy's repr, made on demand."""
    if name == "deep":
        return b"[" * 100000 + b"]" * 100000
    if name == "digits":
        return b'{"linux": {"devices": [{"path": "/dev/a", "type": "b", "major": ' + b"9" * 4301 + b', "minor": 0}]}}'
    assert isinstance(name, bytes)
    return name


def raw_json_case() -> st.SearchStrategy[RawCase]:
    return st.builds(RawCase, raw_json(), hypervisor(), st.booleans())


def toml_text(value: Any) -> str:
    """A TOML rendering of ``value`` (written here: no TOML writer is a test dependency)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) < 10**4000 else "9" * 4301
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_text(v) for v in value if v is not None) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_text(v)}" for k, v in value.items()
                               if v is not None) + "}"
    if value is None:
        return '""'
    return value.isoformat() if hasattr(value, "isoformat") else json.dumps(str(value))


def toml_document(tables: Mapping[str, Mapping[str, Any]]) -> str:
    out = []
    for table, keys in tables.items():
        out.append(f"[{table}]")
        out += [f"{json.dumps(str(k))} = {toml_text(v)}" for k, v in keys.items() if v is not None]
    return "\n".join(out) + "\n"


@st.composite
def raw_toml(draw: st.DrawFn) -> bytes:
    """A ``configuration.toml``: Kata-shaped with hostile values, or broken bytes."""
    section = draw(st.sampled_from(["qemu", "clh", "firecracker", "libvirt", "stratovirt", "dragonball", "qemu,x"]))
    names = [s.name for s in declared()] + sorted(CORE_KEYS)
    keys = draw(st.dictionaries(st.sampled_from(names) | text.name(), toml_value(), max_size=4))
    tables: dict[str, Mapping[str, Any]] = {f"hypervisor.{json.dumps(section)}": keys}
    if draw(st.booleans()):
        tables["runtime"] = {"vfio_mode": draw(st.sampled_from(["vfio", "guest-kernel", "x"]))}
    if draw(st.booleans()):
        tables["vmdev"] = {"hotplug": draw(st.one_of(st.booleans(), toml_value()))}
    document = toml_document(tables).encode("utf-8", "surrogatepass")
    special = draw(st.sampled_from([b"", b"\xff\xfe[hypervisor.qemu]\n", b"[hypervisor.qemu]\nx = 9999" + b"9" * 4300,
                                    b"[[" * 3000, b"a = [" * 3000, b"[hypervisor.qemu]\ndefault_memory = 2251799813685248\n",
                                    b"[hypervisor.qemu]\nentropy_source = '\xed\xa0\x80'\n"]))
    cut = draw(st.integers(0, len(document)))
    return draw(st.sampled_from([document, document, special, document[:cut] + b"\x00" + document[cut:]]))


def raw_toml_case() -> st.SearchStrategy[RawCase]:
    return st.builds(RawCase, raw_toml(), st.just("qemu"), st.booleans())
