"""The real-QEMU oracle of issue 11: hostile but accepted plans, started with ``qemu-system-x86_64
-S``, and what QEMU opened compared over QMP with what the plan says.

A :class:`Shape` is drawn by hypothesis (hostile file names, drivers, read-only flags, hot or cold
plug); :func:`prepare` makes it real in a directory (sparse disk images, a symlink to
``/dev/urandom`` as the entropy source, a directory for ``file_mem_backend``, a vhost-user store
whose nodes are real block nodes and whose sockets are served by a handshake-only backend);
vmdev plans it with the real host context; :func:`run_qemu` starts QEMU stopped (TCG,
``-nodefaults``, ``-display none``), runs the plan's hot-plug commands, asks what QEMU has
(``query-named-block-nodes``, ``qom-get`` of every memory backend's ``mem-path`` and the RNG's
``filename``, ``query-chardev``) and quits; :func:`compare` says where QEMU differs from the plan.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hypothesis import strategies as st

from vhostuser_support import HandshakeBackend
from vmdev.errors import VmdevError
from vmdev.host import HostContext
from vmdev.oci import parse_spec
from vmdev.planner import Plan, plan
from vmdev.qemu import split_opts
from vmdev.settings import load_settings

QEMU: Final = "qemu-system-x86_64"
BLOCK_FILE_OPTION: Final = "io.katacontainers.fs-opt.block_device=file"
#: name fragments QEMU's options and file systems are tried with (no '/' or NUL: they must be names; no
#: control characters either: vmdev refuses those before QEMU, which tests/fuzz proves)
HOSTILE: Final = (",", ",,", "=", ",read-only=on", ",file.filename=/etc/shadow", ",share=off", " ", "'", '"',
                  "\\", ":", "é", "😀", "\u00a0", "#", ";", "{", "}", "$x", "*", "?", "..", "-", "\u202e", "%s",
                  "a=b,c=d", "\udc80")
WORDS: Final = ("disk", "img", "a", "data", "vm", "x")
DRIVERS: Final = ("virtio-blk", "virtio-scsi", "nvdimm")
IMAGE_SIZE: Final = 2 << 20
MEMORY_MIB: Final = 64


def _name() -> st.SearchStrategy[str]:
    piece = st.one_of(st.sampled_from(WORDS), st.sampled_from(HOSTILE))
    return st.lists(piece, min_size=1, max_size=4).map("".join).filter(lambda n: n not in (".", ".."))


@dataclass(frozen=True)
class Shape:
    """One plan to try: disks (directory, file, read-only), the block driver, an entropy source, a
    RAM backend directory, vhost-user-scsi store entries, hot or cold plug."""

    disks: tuple[tuple[str, str, bool], ...]
    driver: str
    rng: str | None
    mem_dir: str | None
    scsi: tuple[str, ...]
    hotplug: bool


def shapes() -> st.SearchStrategy[Shape]:
    return st.builds(
        Shape,
        disks=st.lists(st.tuples(_name(), _name(), st.booleans()), min_size=0, max_size=2,
                       unique_by=lambda d: (d[0], d[1])).map(tuple),
        driver=st.sampled_from(DRIVERS),
        rng=st.none() | _name(),
        mem_dir=st.none() | _name(),
        scsi=st.lists(_name().filter(lambda n: len(n.encode("utf-8", "surrogateescape")) < 40), max_size=1,
                      unique=True).map(tuple),
        hotplug=st.booleans(),
    )


@dataclass
class Prepared:
    """A shape made real: its directory, OCI document, settings and running socket backends."""

    shape: Shape
    workdir: Path
    document: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    backends: list[HandshakeBackend] = field(default_factory=list)

    def close(self) -> None:
        for backend in self.backends:
            backend.__exit__()
        shutil.rmtree(self.workdir, ignore_errors=True)


def prepare(shape: Shape) -> Prepared | None:
    """Make ``shape`` on disk (None when a name cannot exist in a file system)."""
    workdir = Path(tempfile.mkdtemp(prefix="vq-", dir="/tmp"))  # short: sockets have 107 bytes
    ready = Prepared(shape, workdir)
    try:
        _make(ready)
    except (OSError, ValueError):
        ready.close()
        return None
    return ready


def _make(ready: Prepared) -> None:
    shape, base = ready.shape, ready.workdir
    mounts = []
    for index, (directory, name, read_only) in enumerate(shape.disks):
        folder = base / f"d{index}{directory}"
        folder.mkdir()
        image = folder / name
        with open(image, "wb") as handle:
            handle.truncate(IMAGE_SIZE)
        mounts.append({"destination": f"/disk{index}", "source": os.fsdecode(image), "type": "bind",
                       "options": [BLOCK_FILE_OPTION, *(["ro"] if read_only else [])]})
    devices = []
    options: dict[str, Any] = {"block_device_driver": shape.driver, "default_memory": MEMORY_MIB}
    if shape.rng is not None:
        link = base / f"r{shape.rng}"
        link.symlink_to("/dev/urandom")
        options["entropy_source"] = os.fsdecode(link)
        options["valid_entropy_sources"] = [os.fsdecode(link)]
    if shape.mem_dir is not None:
        folder = base / f"m{shape.mem_dir}"
        folder.mkdir()
        options["file_mem_backend"] = os.fsdecode(folder)
    if shape.scsi:
        store = base / "s"
        (store / "block" / "devices").mkdir(parents=True)
        (store / "block" / "sockets").mkdir()
        for minor, name in enumerate(shape.scsi):
            os.mknod(store / "block" / "devices" / name, stat.S_IFBLK | 0o600, os.makedev(242, minor))
            backend = HandshakeBackend(store / "block" / "sockets" / name)
            ready.backends.append(backend.__enter__())
            devices.append({"path": f"/dev/vhs{minor}", "type": "b", "major": 242, "minor": minor})
        options.update(enable_vhost_user_store=True, vhost_user_store_path=os.fsdecode(store))
    ready.document = {"ociVersion": "1.0.2", "linux": {"devices": devices}, "mounts": mounts}
    ready.options = options


def plan_of(ready: Prepared) -> Plan | Exception:
    """vmdev's plan of the prepared shape on this host, or what it raised instead."""
    try:
        settings = load_settings(None, hypervisor="qemu", overrides={**ready.options,
                                                                    "hotplug": ready.shape.hotplug})
        return plan(parse_spec(ready.document), settings, host=HostContext())
    except Exception as exc:  # noqa: BLE001 - a refusal is a VmdevError; anything else is reported
        return exc


# --- QEMU --------------------------------------------------------------------------------------------
@dataclass
class Answer:
    rc: int
    stderr: str
    replies: dict[str, Any]
    command: list[str]


def _objects(result: Plan) -> dict[str, str]:
    """Every ``-object``/``object-add`` of the plan: id -> qom type (from the plan, to ask QEMU)."""
    found: dict[str, str] = {}
    argv = list(result.qemu.argv)
    for index, arg in enumerate(argv[:-1]):
        if arg == "-object":
            params = _params(argv[index + 1])
            found[params.get("id", "")] = params.get("qom-type", "")
    for command in result.qemu.hotplug:
        if command.execute == "object-add":
            found[str(command.arguments["id"])] = str(command.arguments["qom-type"])
    return found


def _chardevs(result: Plan) -> list[str]:
    """The ids of the plan's ``-chardev``/``chardev-add`` (QEMU's labels)."""
    argv = list(result.qemu.argv)
    found = [_params(argv[i + 1]).get("id", "") for i, arg in enumerate(argv[:-1]) if arg == "-chardev"]
    return found + [str(c.arguments["id"]) for c in result.qemu.hotplug if c.execute == "chardev-add"]


def _params(value: str) -> dict[str, str]:
    """QEMU's reading of one option value (``,,`` is a comma; the first bare value is qom-type)."""
    out: dict[str, str] = {}
    for position, part in enumerate(split_opts(value)):
        key, sep, item = part.partition("=")
        if not sep and position == 0:
            out["qom-type"] = key
        else:
            out[key] = item
    return out


def qmp_script(result: Plan) -> list[dict[str, Any]]:
    """What is sent to QEMU: the plan's hot-plug commands, then the questions, then quit."""
    lines: list[dict[str, Any]] = [{"execute": "qmp_capabilities"}]
    for index, command in enumerate(result.qemu.hotplug):
        lines.append({**command.to_json(), "id": f"hotplug-{index}"})
    lines.append({"execute": "query-named-block-nodes", "arguments": {"flat": True}, "id": "nodes"})
    lines.append({"execute": "query-chardev", "id": "chardevs"})
    for label in _chardevs(result):  # query-chardev shows a connected client as "unix:"; addr has the path
        lines.append({"execute": "qom-get", "arguments": {"path": f"/chardevs/{label}", "property": "addr"},
                      "id": f"chardev/{label}"})
    for object_id, kind in _objects(result).items():
        for prop in {"memory-backend-file": ("mem-path", "readonly"), "rng-random": ("filename",)}.get(kind, ()):
            lines.append({"execute": "qom-get", "arguments": {"path": f"/objects/{object_id}", "property": prop},
                          "id": f"{object_id}/{prop}"})
    lines.append({"execute": "quit"})
    return lines


def run_qemu(result: Plan, *, timeout: float = 60.0) -> Answer:
    """Start QEMU stopped with the plan's argv, send :func:`qmp_script`, collect the replies."""
    command = [QEMU, "-S", "-nodefaults", "-no-user-config", "-display", "none", "-accel", "tcg", "-qmp", "stdio",
               *result.qemu.argv]
    script = "".join(json.dumps(line) + "\n" for line in qmp_script(result))
    done = subprocess.run(command, input=script.encode(), capture_output=True, timeout=timeout, check=False)
    replies: dict[str, Any] = {}
    for line in done.stdout.decode("utf-8", "surrogateescape").splitlines():
        with contextlib.suppress(ValueError):
            reply = json.loads(line)
            if isinstance(reply, dict) and "id" in reply:
                replies[str(reply["id"])] = reply
    return Answer(done.returncode, done.stderr.decode("utf-8", "replace"), replies, command)


# --- comparing ------------------------------------------------------------------------------------------
def _value(answer: Answer, key: str) -> Any:
    reply = answer.replies.get(key)
    if reply is None:
        raise LookupError(f"QEMU gave no reply to {key}")
    if "error" in reply:
        raise LookupError(f"{key}: {reply['error'].get('desc')}")
    return reply["return"]


def reported(path: str) -> str:
    """``path`` as QMP reports it: QEMU gets the file name's bytes (surrogate escapes become the raw
    bytes they stand for) and writes JSON, where bytes that are not UTF-8 become U+FFFD."""
    return os.fsencode(path).decode("utf-8", "replace")


def compare(result: Plan, answer: Answer) -> tuple[list[str], int]:
    """Where QEMU's view differs from the plan, and how many facts were compared."""
    if answer.rc != 0:
        return [f"QEMU refused the plan (rc {answer.rc}): {answer.stderr.strip()[:400]}"], 0
    problems: list[str] = []
    checked = 0
    for index, command in enumerate(result.qemu.hotplug):
        reply = answer.replies.get(f"hotplug-{index}", {})
        if "error" in reply:
            problems.append(f"QEMU refused {command.execute}: {reply['error'].get('desc')}")
    nodes = {n.get("node-name"): n for n in _value(answer, "nodes")}
    chardevs = {c.get("label") for c in _value(answer, "chardevs")}
    mem_paths = {key.split("/")[0]: _value(answer, key) for key in answer.replies if key.endswith("/mem-path")}
    for device in result.devices:
        data = device.to_json()
        if device.kind == "block" and data.get("driver") in ("nvdimm", "virtio-pmem"):
            checked += 1
            if reported(device.host_path) not in mem_paths.values():
                problems.append(f"{device.name}: no memory backend maps {device.host_path!r} (QEMU: "
                                f"{sorted(mem_paths.values())!r})")
            for object_id, path in mem_paths.items():
                if path == reported(device.host_path) and bool(_value(answer, f"{object_id}/readonly")) != data["read_only"]:
                    problems.append(f"{device.name}: {path!r} readonly is not {data['read_only']}")
        elif device.kind == "block":
            checked += 2
            node = nodes.get(device.id)
            if node is None:
                problems.append(f"{device.name}: QEMU has no block node {device.id}")
            elif (node.get("file"), bool(node.get("ro"))) != (reported(device.host_path), data["read_only"]):
                problems.append(f"{device.name}: QEMU opened {node.get('file')!r} ro={node.get('ro')}, the plan says "
                                f"{device.host_path!r} read_only={data['read_only']}")
        elif device.kind == "rng" and data.get("filename"):
            checked += 1
            found = _value(answer, f"{device.id}/filename")
            if found != reported(data["filename"]):
                problems.append(f"rng: QEMU reads {found!r}, the plan says {data['filename']!r}")
        elif device.kind == "vhost-user":
            checked += 1
            label = f"chr-{device.id}"
            address = _value(answer, f"chardev/{label}") if label in chardevs else {}
            if (address.get("type"), address.get("path")) != ("unix", reported(data["socket_path"])):
                problems.append(f"{device.name}: chardev {label} connects to {address!r}, the plan says "
                                f"{data['socket_path']!r}")
    wanted = result.settings.values.get("file_mem_backend")
    if wanted:
        checked += 1
        if mem_paths.get("vmdev-ram") != reported(wanted):
            problems.append(f"guest RAM: mem-path {mem_paths.get('vmdev-ram')!r}, file_mem_backend is {wanted!r}")
    return problems, checked


@dataclass
class Tried:
    """One shape's fate: refused by vmdev (one line), or started and compared."""

    shape: Shape
    refusal: str = ""
    crash: str = ""
    problems: list[str] = field(default_factory=list)
    checked: int = 0
    hostile: bool = False


def try_shape(shape: Shape) -> Tried | None:
    ready = prepare(shape)
    if ready is None:
        return None
    try:
        result = plan_of(ready)
        if isinstance(result, VmdevError):
            return Tried(shape, refusal=str(result))
        if isinstance(result, Exception):
            return Tried(shape, crash=f"{type(result).__name__}: {result}")
        problems, checked = compare(result, run_qemu(result))
        return Tried(shape, problems=problems, checked=checked, hostile=_hostile(shape))
    finally:
        ready.close()


def _hostile(shape: Shape) -> bool:
    names: Sequence[str] = [*(d for disk in shape.disks for d in disk[:2]), shape.rng or "", shape.mem_dir or "",
                            *shape.scsi]
    return any(any(h in name for h in HOSTILE) for name in names)


def summary(tried: Sequence[Tried]) -> Mapping[str, int]:
    started = [t for t in tried if not t.refusal and not t.crash]
    return {"shapes": len(tried), "refused by vmdev": sum(bool(t.refusal) for t in tried),
            "crashed in vmdev": sum(bool(t.crash) for t in tried), "started in QEMU": len(started),
            "hostile names among them": sum(t.hostile for t in started),
            "facts compared": sum(t.checked for t in started), "mismatches": sum(len(t.problems) for t in started)}
