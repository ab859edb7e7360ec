"""vmdev check: QEMU's option syntax, which device an option belongs to, the checks against a
binary's answers, the cache, and the command. No QEMU needed: the binary is a recorded fake.

``RECORDED`` is a small piece of what QEMU 7.2 answers (its schema types un-masked for reading);
``answer()`` replies to QMP from it. The same function answers in-process (``Recorded``, for the
checks) and inside ``fake-qemu``, an executable that speaks QMP on stdio like ``qemu -qmp stdio``
(for the real transport, the restarts and the cache). Like QEMU 7.2, the fake aborts on
``qom-list-properties`` of ``microvm-machine``.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import pytest
from click.testing import CliRunner

from vmdev.cli import main
from vmdev.preflight import (
    Checker,
    Listing,
    Needs,
    Probe,
    QemuFacts,
    ask_properties,
    attribute,
    base_facts,
    check_part,
    check_plan,
    default_cache_dir,
    parse_part,
)

VERSION = "7.2.22"
Q = f"QEMU {VERSION}"


def _object(name: str, members: Mapping[str, str], optional: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    return {"name": name, "meta-type": "object", **extra,
            "members": [{"name": k, "type": t, **({"default": None} if k in optional else {})}
                        for k, t in members.items()]}


SCHEMA: list[dict[str, Any]] = [
    *({"name": n, "meta-type": "builtin", "json-type": j} for n, j in (
        ("str", "string"), ("int", "int"), ("bool", "boolean"), ("null", "null"), ("any", "value"))),
    {"name": "0", "meta-type": "object", "members": []},
    *({"name": c, "meta-type": "command", "arg-type": a, "ret-type": "0"} for c, a in (
        ("blockdev-add", "BlockdevOptions"), ("blockdev-del", "NodeName"), ("object-add", "ObjectOptions"),
        ("object-del", "Id"), ("device_del", "Id"), ("netdev_add", "Netdev"), ("netdev_del", "Id"),
        ("chardev-add", "ChardevAdd"), ("chardev-remove", "Id"), ("query-status", "0"))),
    {"name": "device_add", "meta-type": "command", "arg-type": "DeviceAdd", "ret-type": "0",
     "features": ["json-cli", "json-cli-hotplug"]},
    _object("DeviceAdd", {"driver": "str", "bus": "str", "id": "str"}, ("bus", "id")),
    _object("Id", {"id": "str"}),
    _object("NodeName", {"node-name": "str"}),
    _object("ObjectOptions", {"qom-type": "str", "id": "str"}),
    _object("BlockdevOptions", {"driver": "BlockdevDriver", "node-name": "str", "read-only": "bool",
                                "cache": "BlockdevCache"}, ("node-name", "read-only", "cache"),
            tag="driver", variants=[{"case": "raw", "type": "BlockdevRaw"}, {"case": "file", "type": "BlockdevFile"},
                                    {"case": "host_device", "type": "BlockdevFile"}]),
    {"name": "BlockdevDriver", "meta-type": "enum", "values": ["raw", "file", "host_device", "qcow2"]},
    _object("BlockdevRaw", {"file": "BlockdevRef", "offset": "int"}, ("offset",)),
    {"name": "BlockdevRef", "meta-type": "alternate", "members": [{"type": "BlockdevOptions"}, {"type": "str"}]},
    _object("BlockdevFile", {"filename": "str", "aio": "BlockdevAio"}, ("aio",)),
    {"name": "BlockdevAio", "meta-type": "enum", "values": ["threads", "native", "io_uring"]},
    _object("BlockdevCache", {"direct": "bool", "no-flush": "bool"}, ("direct", "no-flush")),
    _object("Netdev", {"id": "str", "type": "NetClientDriver"}, tag="type",
            variants=[{"case": "vhost-user", "type": "NetdevVhostUser"}, {"case": "user", "type": "0"}]),
    {"name": "NetClientDriver", "meta-type": "enum", "values": ["user", "vhost-user"]},
    _object("NetdevVhostUser", {"chardev": "str", "queues": "int"}, ("queues",)),
    _object("ChardevAdd", {"id": "str", "backend": "ChardevBackend"}),
    _object("ChardevBackend", {"type": "ChardevBackendKind"}, tag="type",
            variants=[{"case": "socket", "type": "ChardevSocketWrapper"}]),
    {"name": "ChardevBackendKind", "meta-type": "enum", "values": ["socket", "file"]},
    _object("ChardevSocketWrapper", {"data": "ChardevSocket"}),
    _object("ChardevSocket", {"addr": "str", "server": "bool", "reconnect": "int"}, ("server", "reconnect")),
]
#: a QEMU that aborts on a question: its listing is an error (machines fall back to -machine help)
CRASH: Final = "crash"
RECORDED: dict[str, Any] = {
    "schema": SCHEMA,
    "devices": {
        "virtio-blk-pci": {"drive": "str", "serial": "str", "addr": "int32", "multifunction": "bool",
                           "iothread": "link<iothread>", "logical_block_size": "size"},
        "virtio-rng-pci": {"rng": "link<rng-backend>", "addr": "int32"},
        "vfio-pci": {"host": "str", "sysfsdev": "str", "addr": "int32", "multifunction": "bool"},
        "pcie-root-port": {"chassis": "uint8", "slot": "uint16", "addr": "int32"},
        "scsi-hd": {"drive": "str", "scsi-id": "uint32", "lun": "uint32", "channel": "uint32", "serial": "str"},
        "virtio-scsi-pci": {"iothread": "link<iothread>"},
        "vhost-user-blk-pci": {"chardev": "str"},
        "virtio-net-pci": {"netdev": "str", "mac": "str"},
        "virtio-9p-pci": {"fsdev": "str", "mount_tag": "str"},
        "kills-qemu": CRASH,
    },
    "objects": {
        "rng-random": {"type": "string", "filename": "string", "opened": "bool"},
        "memory-backend-file": {"type": "string", "mem-path": "string", "size": "int", "share": "bool"},
        "memory-backend-memfd": {"type": "string", "size": "int", "share": "bool"},
        "iothread": {"type": "string", "poll-max-ns": "int"},
    },
    "machines": {"pc-q35-7.2": ("q35", {"nvdimm": "bool", "memory-backend": "link<memory-backend>",
                                         "dt-compatible": "string"}),
                 "pc-i440fx-7.2": ("pc", {"nvdimm": "bool"}),
                 "microvm": ("", CRASH)},
    "help": {"microvm": {"acpi": "OnOffAuto", "isa-serial": "bool"}},
    "command-line": {
        "memory": {"size": "size", "slots": "number", "maxmem": "size"},
        "machine": {"type": "string", "accel": "string", "kernel_irqchip": "string", "dt_compatible": "string"},
        "chardev": {"backend": "string", "path": "string", "server": "boolean", "wait": "boolean",
                    "reconnect": "number"},
        "fsdev": {"fsdriver": "string", "path": "string", "security_model": "string", "multidevs": "string",
                  "readonly": "boolean"},
    },
    "chardev-backends": ["socket", "file", "null"],
}


def answer(recorded: dict[str, Any], execute: str, arguments: dict[str, Any]) -> list[Any]:
    """QEMU's reply to one QMP command from ``recorded``: ["return", value], ["error", class, desc]
    or ["crash"] (QEMU aborts). Also the body of the fake QEMU executable (copied by source)."""
    typename = str(arguments.get("typename", ""))

    def listing(props: Any) -> list[Any]:
        if props == "crash":
            return ["crash"]
        return ["return", [{"name": k, "type": t} for k, t in props.items()]]

    machines = recorded["machines"]
    if execute == "qmp_capabilities":
        return ["return", {}]
    if execute == "query-qmp-schema":
        return ["return", recorded["schema"]]
    if execute == "qom-list-types":
        names = recorded["devices"] if arguments.get("implements") == "device" else recorded["objects"]
        return ["return", [{"name": n, "parent": "x"} for n in names]]
    if execute == "query-machines":
        return ["return", [{"name": n, **({"alias": a} if a else {})} for n, (a, _) in machines.items()]]
    if execute == "query-command-line-options":
        return ["return", [{"option": o, "parameters": [{"name": k, "type": t} for k, t in p.items()]}
                           for o, p in recorded["command-line"].items()]]
    if execute == "query-chardev-backends":
        return ["return", [{"name": b} for b in recorded["chardev-backends"]]]
    if execute == "device-list-properties" and typename in recorded["devices"]:
        return listing(recorded["devices"][typename])
    if execute == "qom-list-properties" and typename in recorded["objects"]:
        return listing(recorded["objects"][typename])
    if execute == "qom-list-properties" and typename.removesuffix("-machine") in machines:
        return listing(machines[typename.removesuffix("-machine")][1])
    if execute in ("device-list-properties", "qom-list-properties"):
        return ["error", "DeviceNotFound", f"Device '{typename}' not found"]
    return ["error", "CommandNotFound", f"The command {execute} has not been found"]


class Recorded:
    """An in-process session answering from ``RECORDED`` (the checks need no process)."""

    version = VERSION
    package = "recorded"

    def ask(self, execute: str, arguments: Mapping[str, Any] | None = None) -> Any:
        reply = answer(RECORDED, execute, dict(arguments or {}))
        assert reply[0] == "return", reply
        return reply[1]

    def close(self) -> None:
        pass


def recorded_facts() -> QemuFacts:
    facts = base_facts(Recorded())
    needs = Needs(device=frozenset(t for t, p in RECORDED["devices"].items() if p != CRASH),
                  object=frozenset(RECORDED["objects"]), machine=frozenset({"pc-q35-7.2", "pc-i440fx-7.2"}))
    for kind, listings in ask_properties("recorded", needs, lambda _: Recorded()).items():
        facts = facts.with_listings(kind, listings)
    return facts.with_listings("machine", {"microvm": Listing(properties=RECORDED["help"]["microvm"],
                                                              source="help")})


FACTS = recorded_facts()


def lines(argv: Sequence[str] = (), hotplug: Sequence[dict[str, Any]] = (),
          unplug: Sequence[dict[str, Any]] = (), devices: Sequence[dict[str, Any]] = (),
          facts: QemuFacts = FACTS) -> list[str]:
    parsed = parse_part({"argv": list(argv), "hotplug": list(hotplug), "unplug": list(unplug)})
    return [m.line() for m in check_part(parsed, list(devices), facts).mismatches]


def qmp(execute: str, **arguments: Any) -> dict[str, Any]:
    return {"execute": execute, "arguments": arguments}


# --- QEMU's option syntax --------------------------------------------------------------------------
def test_a_doubled_comma_is_a_literal_comma_not_a_new_property() -> None:
    (item,) = parse_part({"argv": ["-object", "rng-random,id=rng0,filename=/dev/a,,b"]}).items
    assert (item.kind, item.head, dict(item.props), item.bare) == (
        "-object", "rng-random", {"id": "rng0", "filename": "/dev/a,b"}, ())
    assert lines(["-object", "rng-random,id=rng0,filename=/dev/a,,b"]) == []


def test_an_unescaped_comma_is_a_short_form_boolean_and_reported() -> None:
    assert lines(["-object", "rng-random,id=rng0,filename=/dev/a,b"]) == [
        "vmdev: check: sandbox: -object rng-random,b: short-form boolean 'b': QEMU reads it as b=on "
        "(deprecated); an unescaped comma in a value looks like this"]


def test_the_implied_key_may_also_be_written_out_and_a_key_given_twice_is_reported() -> None:
    (item,) = parse_part({"argv": ["-device", "driver=virtio-rng-pci,rng=r,rng=s"]}).items
    assert (item.head, dict(item.props), item.twice) == ("virtio-rng-pci", {"rng": "r"}, ("rng",))
    assert lines(["-device", "driver=virtio-rng-pci,rng=r,rng=s"]) == [
        "vmdev: check: sandbox: -device virtio-rng-pci,rng: is given twice"]


def test_blockdev_keys_nest_at_dots_and_json_options_are_read_as_json() -> None:
    keyval, json_form = parse_part({"argv": [
        "-blockdev", "driver=raw,node-name=d0,file.driver=file,file.filename=/i,,mg",
        "-blockdev", json.dumps({"driver": "raw", "node-name": "d1", "file": {"driver": "file", "filename": "/j"}}),
    ]}).items
    assert (keyval.head, dict(keyval.props), keyval.json) == (
        "raw", {"node-name": "d0", "file": {"driver": "file", "filename": "/i,mg"}}, False)
    assert (json_form.head, json_form.props["file"], json_form.json) == ("raw", {"driver": "file", "filename": "/j"},
                                                                          True)


def test_options_without_a_value_and_options_not_checked_are_skipped_whole() -> None:
    parsed = parse_part({"argv": ["-nodefaults", "-smp", "2", "-S", "-M", "q35", "--device", "virtio-rng-pci"]})
    assert [(i.kind, i.head) for i in parsed.items] == [("-machine", "q35"), ("-device", "virtio-rng-pci")]
    assert parsed.unchecked == ("-nodefaults", "-smp", "-S")


def test_a_value_without_an_option_and_an_option_without_a_value_are_mismatches() -> None:
    assert lines(["q35", "-m"]) == ["vmdev: check: sandbox: q35: not an option: a value without one",
                                    "vmdev: check: sandbox: -m: needs a value"]
    assert lines(["-device", "{not json"]) == [
        "vmdev: check: sandbox: -device: not valid JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)"]


@pytest.mark.parametrize(("value", "problem"), [
    ('{"driver": "virtio-rng-pci", "x": ' + "[" * 50_000 + "]" * 50_000 + "}", "nested too deeply"),
    ('{"qom-type": "rng-random", "x": NaN}', "NaN is not JSON"),
])
def test_a_json_option_is_read_as_strictly_as_any_document_vmdev_reads(value: str, problem: str) -> None:
    """The deep one was an internal error (RecursionError) before."""
    assert lines(["-object", value]) == [f"vmdev: check: sandbox: -object: not valid JSON: {problem}"]


def test_a_plan_part_of_the_wrong_shape_is_a_one_line_config_error() -> None:
    from vmdev.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^\$\.qemu\.argv: must be a list of strings$"):
        parse_part({"argv": ["-m", 5]})
    with pytest.raises(ConfigError, match=r"^\$\.qemu\.hotplug\[0\]: must be"):
        parse_part({"argv": [], "hotplug": [{"arguments": {}}]})


# --- which device an option belongs to ---------------------------------------------------------------
RNG = {"container_path": None, "id": "rng0", "kind": "rng"}
DISK = {"container_path": "/dev/xvda", "id": "drive-1", "kind": "block", "drive": {"id": "drive-1"}}
DISK2 = {"container_path": "/dev/xvdb", "id": "drive-2", "kind": "block"}
VHOST = {"container_path": "/dev/vhu", "id": "vhublk-1", "kind": "vhost-user", "chardev": "chr-vhublk-1"}


def owners(argv: Sequence[str], devices: Sequence[dict[str, Any]], hotplug: Sequence[Any] = (),
           unplug: Sequence[Any] = ()) -> list[tuple[str, str]]:
    parsed = parse_part({"argv": list(argv), "hotplug": list(hotplug), "unplug": list(unplug)})
    return list(zip([i.subject for i in parsed.items], attribute(parsed.items, devices), strict=True))


def test_an_option_belongs_to_the_device_whose_values_or_id_name_it() -> None:
    argv = ["-machine", "q35", "-chardev", "socket,id=chr-vhublk-1,path=/s", "-device",
            "vhost-user-blk-pci,id=vhublk-1,chardev=chr-vhublk-1", "-object", "rng-random,id=rng0",
            "-device", "virtio-rng-pci,id=virtio-rng0,rng=rng0", "-blockdev", "raw,node-name=drive-1,file=x",
            "-device", "virtio-blk-pci,id=virtio-drive-1,drive=drive-1"]
    assert owners(argv, [DISK, RNG, VHOST]) == [
        ("-machine q35", "sandbox"), ("-chardev socket", "/dev/vhu"), ("-device vhost-user-blk-pci", "/dev/vhu"),
        ("-object rng-random", "rng0"), ("-device virtio-rng-pci", "rng0"), ("-blockdev raw", "/dev/xvda"),
        ("-device virtio-blk-pci", "/dev/xvda")]


def test_what_one_device_uses_follows_it_and_what_several_share_stays_with_the_sandbox() -> None:
    argv = ["-device", "virtio-scsi-pci,id=scsi0", "-object", "memory-backend-file,id=backmem-x",
            "-device", "scsi-hd,drive=drive-1,bus=scsi0.0", "-device", "scsi-hd,drive=drive-2,bus=scsi0.0",
            "-device", "nvdimm,id=nv-x,memdev=backmem-x", "-device", "pcie-root-port,id=rp0",
            "-device", "virtio-rng-pci,id=virtio-rng0,bus=rp0"]
    assert [o for _, o in owners(argv, [DISK, DISK2, RNG])] == [
        "sandbox", "sandbox", "/dev/xvda", "/dev/xvdb", "sandbox", "rng0", "rng0"]
    assert [o for _, o in owners(argv[:6], [DISK, RNG])] == ["/dev/xvda", "sandbox", "/dev/xvda"]


def test_unplug_commands_follow_the_device_whose_hot_plug_created_their_object() -> None:
    hot = [qmp("blockdev-add", driver="raw", **{"node-name": "drive-1"}),
           qmp("device_add", driver="virtio-blk-pci", id="vd9", drive="drive-1")]
    unplug = [qmp("device_del", id="vd9"), qmp("blockdev-del", **{"node-name": "drive-1"}),
              qmp("device_del", id="other")]
    assert owners([], [DISK, RNG], hot, unplug) == [
        ("hotplug blockdev-add raw", "/dev/xvda"), ("hotplug device_add virtio-blk-pci", "/dev/xvda"),
        ("unplug device_del", "/dev/xvda"), ("unplug blockdev-del", "/dev/xvda"), ("unplug device_del", "sandbox")]


# --- the checks ----------------------------------------------------------------------------------------
def test_a_misspelt_property_is_one_line_naming_the_device_and_the_option() -> None:
    argv = ["-blockdev", "raw,node-name=drive-1,file=f", "-device", "virtio-blk-pci,id=virtio-drive-1,"
            "drive=drive-1,serail=drive-1"]
    assert lines(argv, devices=[DISK]) == [
        f"vmdev: check: /dev/xvda: -device virtio-blk-pci,serail: {Q}'s virtio-blk-pci has no property 'serail' "
        "(did you mean 'serial'?)"]


def test_a_driver_or_object_type_the_binary_lacks_is_reported_and_never_asked_about() -> None:
    argv = ["-object", "iommufd,id=iommufd0", "-device", "vfio-pci,host=0000:00:03.0,iommufd=iommufd0",
            "-device", "virtio-blk-pcie"]
    assert lines(argv) == [
        f"vmdev: check: sandbox: -object iommufd: {Q} has no object type 'iommufd'",
        f"vmdev: check: sandbox: -device vfio-pci,iommufd: {Q}'s vfio-pci has no property 'iommufd'",
        f"vmdev: check: sandbox: -device virtio-blk-pcie: {Q} has no device 'virtio-blk-pcie' (did you mean "
        "'virtio-blk-pci'?)"]
    items = parse_part({"argv": argv}).items
    assert Checker(FACTS).needs(items) == Needs(device=frozenset({"vfio-pci"}))


def test_qdev_and_qom_keys_are_not_properties_and_qoms_read_only_type_is_not_settable() -> None:
    assert lines(["-device", "driver=virtio-rng-pci,id=v,bus=pcie.0,rng=r", "-object", "qom-type=rng-random,id=r",
                  "-device", json.dumps({"driver": "virtio-rng-pci", "id": "w", "bus": "pcie.0"})]) == []
    assert lines(["-object", "rng-random,id=r,type=x"]) == [
        f"vmdev: check: sandbox: -object rng-random,type: {Q}'s rng-random has no property 'type'"]


def test_booleans_are_on_off_words_on_the_command_line_and_json_booleans_in_qmp() -> None:
    assert lines(["-device", "vfio-pci,multifunction=on", "-object", "memory-backend-memfd,share=yes,size=1G",
                  "-device", "vfio-pci,multifunction=maybe"]) == [
        "vmdev: check: sandbox: -device vfio-pci,multifunction: vfio-pci's property 'multifunction' is "
        "boolean: 'maybe' is not on/off"]
    assert lines(hotplug=[qmp("device_add", driver="vfio-pci", multifunction=True, host="x"),
                          qmp("device_add", driver="vfio-pci", multifunction="on", host=5)]) == [
        "vmdev: check: sandbox: hotplug device_add vfio-pci,multifunction: vfio-pci's property 'multifunction' "
        "is boolean: 'on' is not a JSON true/false",
        "vmdev: check: sandbox: hotplug device_add vfio-pci,host: vfio-pci's property 'host' is a string: got 5"]


def test_integer_properties_are_left_to_qemus_own_parsers() -> None:
    assert lines(["-device", "vfio-pci,addr=03.0", "-device", "pcie-root-port,chassis=0x1,slot=2"],
                 [qmp("device_add", driver="vfio-pci", addr="00.1")]) == []


def test_machine_types_aliases_legacy_keys_and_properties() -> None:
    assert lines(["-machine", "q35,accel=tcg,kernel_irqchip=split,nvdimm=on,dt_compatible=x,memory-backend=m",
                  "-machine", "type=pc-q35-7.2", "-M", "pc,nvdimm=off", "-machine", "accel=tcg"]) == []
    assert lines(["-machine", "q53", "-machine", "q35,nvdimmm=on,nvdimm=1", "-machine", "accell=tcg"]) == [
        f"vmdev: check: sandbox: -machine q53: {Q} has no machine 'q53' (did you mean 'q35'?)",
        f"vmdev: check: sandbox: -machine q35,nvdimmm: {Q}'s machine pc-q35-7.2 has no property 'nvdimmm' (did "
        "you mean 'nvdimm'?)",
        "vmdev: check: sandbox: -machine q35,nvdimm: '1' is not on/off for the boolean property 'nvdimm'",
        f"vmdev: check: sandbox: -machine,accell: {Q}'s -machine has no key 'accell' (did you mean 'accel'?)"]


def test_memory_chardev_and_fsdev_keys_are_the_command_line_options_qemu_lists() -> None:
    good = ["-m", "512M,slots=2,maxmem=1G", "-chardev", "socket,id=c,path=/s,server=off,reconnect=5",
            "-fsdev", "local,id=f,path=/d,security_model=none,multidevs=remap"]
    assert lines(good) == []
    assert lines(["-m", "lots,slotz=2", "-chardev", "sockett,id=c", "-chardev", "socket,id=c,server=maybe",
                  "-fsdev", "locale,id=f", "-fsdev", "local,id=f,mount_tag=t"]) == [
        f"vmdev: check: sandbox: -m lots,size: {Q}'s -m's key 'size' is a size: got 'lots'",
        f"vmdev: check: sandbox: -m lots,slotz: {Q}'s -m has no key 'slotz' (did you mean 'slots'?)",
        f"vmdev: check: sandbox: -chardev sockett: {Q} has no chardev backend 'sockett' (did you mean 'socket'?)",
        f"vmdev: check: sandbox: -chardev socket,server: {Q}'s -chardev's key 'server' is boolean: 'maybe' is "
        "not on/off",
        "vmdev: check: sandbox: -fsdev locale: QEMU has no fs driver 'locale' (one of local, proxy, synth)",
        f"vmdev: check: sandbox: -fsdev local,mount_tag: {Q}'s -fsdev has no key 'mount_tag'"]


def test_a_qemu_without_virtfs_has_no_fsdev() -> None:
    facts = QemuFacts.from_json({**FACTS.to_json(), "command-line-options": {}})
    assert lines(["-fsdev", "local,id=f"], facts=facts) == [
        f"vmdev: check: sandbox: -fsdev local: {Q} has no -fsdev (built without virtfs)"]


def test_blockdev_is_checked_against_blockdev_adds_schema_for_its_driver_nested_keys_included() -> None:
    good = "driver=raw,node-name=d,read-only=off,cache.direct=on,file.driver=host_device,file.filename=/dev/x,,y," \
           "file.aio=io_uring"
    assert lines(["-blockdev", good, "-blockdev", "raw,file=other-node"]) == []
    assert lines(["-blockdev", "raw,node-name=d,file.driver=file,file.filenme=/x,file.aio=uring",
                  "-blockdev", "qcow2,file=n", "-blockdev", "vmdk", "-blockdev", "raw,read-only=perhaps"]) == [
        f"vmdev: check: sandbox: -blockdev raw,file.filenme: {Q}'s blockdev-add (driver=file) has no member "
        "'filenme' (did you mean 'filename'?)",
        f"vmdev: check: sandbox: -blockdev raw,file.aio: \"uring\" is not a value {Q}'s blockdev-add knows for "
        "'file.aio' (one of threads, native, io_uring)",
        f"vmdev: check: sandbox: -blockdev qcow2,driver: {Q}'s blockdev-add has no driver 'qcow2'",
        f"vmdev: check: sandbox: -blockdev vmdk,driver: {Q}'s blockdev-add has no driver 'vmdk'",
        f"vmdev: check: sandbox: -blockdev raw,read-only: {Q}'s blockdev-add expects boolean for 'read-only', "
        "got \"perhaps\"",
        f"vmdev: check: sandbox: -blockdev raw,file: {Q}'s blockdev-add (driver=raw) requires 'file'"]


def test_json_blockdev_and_qmp_arguments_must_have_the_schemas_json_types() -> None:
    node = {"driver": "raw", "node-name": "d", "file": {"driver": "file", "filename": "/x"}}
    assert lines(["-blockdev", json.dumps(node)], [qmp("blockdev-add", **node)]) == []
    bad = {"driver": "raw", "read-only": "on", "file": {"driver": "file", "filename": 5}}
    assert lines(hotplug=[qmp("blockdev-add", **bad)]) == [
        f"vmdev: check: sandbox: hotplug blockdev-add raw,read-only: {Q}'s blockdev-add expects boolean for "
        "'read-only', got \"on\"",
        f"vmdev: check: sandbox: hotplug blockdev-add raw,file.filename: {Q}'s blockdev-add expects string for "
        "'file.filename', got 5"]


def test_netdev_and_the_other_qmp_commands_are_checked_against_their_schema() -> None:
    hot = [qmp("chardev-add", id="c", backend={"type": "socket", "data": {"addr": "/s", "server": False}}),
           qmp("netdev_add", type="vhost-user", id="n", chardev="c"), qmp("query-status")]
    unplug = [qmp("netdev_del", id="n"), qmp("chardev-remove", id="c")]
    assert lines(["-netdev", "vhost-user,id=n,chardev=c,queues=2"], hot, unplug) == []
    assert lines(["-netdev", "vhost-user,id=n,chardevv=c"],
                 [qmp("chardev-add", id="c", backend={"type": "socket", "data": {"path": "/s"}}),
                  qmp("query-status", verbose=True), qmp("x-no-such-thing")], [qmp("device_del", name="x")]) == [
        f"vmdev: check: sandbox: -netdev vhost-user,chardevv: {Q}'s netdev_add (type=vhost-user) has no member "
        "'chardevv' (did you mean 'chardev'?)",
        f"vmdev: check: sandbox: hotplug chardev-add,backend.data.path: {Q}'s chardev-add (type=socket) has no "
        "member 'path'",
        f"vmdev: check: sandbox: hotplug query-status,verbose: {Q}'s query-status has no member 'verbose'",
        f"vmdev: check: sandbox: hotplug x-no-such-thing: {Q} has no QMP command 'x-no-such-thing'",
        f"vmdev: check: sandbox: unplug device_del,name: {Q}'s device_del has no member 'name'"]


def test_device_add_and_object_add_are_checked_like_device_and_object() -> None:
    hot = [qmp("object-add", **{"qom-type": "rng-random", "id": "r", "filename": "/dev/urandom"}),
           qmp("device_add", driver="virtio-rng-pci", id="v", rng="r", bus="rp0")]
    assert lines(hotplug=hot) == []
    assert lines(hotplug=[qmp("object-add", **{"qom-type": "iommufd", "id": "i"}),
                          qmp("device_add", driver="virtio-rng-pci", rgn="r"), qmp("device_add", id="x")]) == [
        f"vmdev: check: sandbox: hotplug object-add iommufd: {Q} has no object type 'iommufd'",
        f"vmdev: check: sandbox: hotplug device_add virtio-rng-pci,rgn: {Q}'s virtio-rng-pci has no property "
        "'rgn' (did you mean 'rng'?)",
        "vmdev: check: sandbox: hotplug device_add: names no driver"]


def test_a_type_qemu_cannot_list_is_a_note_not_a_mismatch() -> None:
    facts = FACTS.with_listings("device", {"kills-qemu": Listing(error="QEMU stopped answering: aborted")})
    parsed = parse_part({"argv": ["-device", "kills-qemu,x=1"]})
    report = check_part(parsed, [], facts)
    assert report.clean
    assert [(n.device, n.option, n.problem) for n in report.notes] == [
        ("sandbox", "-device kills-qemu", f"{Q} could not list the properties of kills-qemu: QEMU stopped "
                                          "answering: aborted")]


def test_a_mismatch_is_always_one_printable_line() -> None:
    device = {"container_path": "/dev/evil\nvmdev: check: forged", "id": "e"}
    (line,) = lines(["-device", "virtio-rng-pci,id=e,bogus=1"], devices=[device])
    assert "\n" not in line
    assert line.startswith("vmdev: check: /dev/evil\\nvmdev: check: forged: -device virtio-rng-pci,bogus: ")


# --- asking the binary, and the cache ------------------------------------------------------------------
FAKE_QEMU = '''#!{python}
"""A recorded QEMU: QMP on stdio from the recorded answers, -machine TYPE,help from the help texts."""
import json, os, sys
from typing import Any

RECORDED = json.load(open({recorded!r}))
with open({log!r}, "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
{answer}

def send(message):
    sys.stdout.write(json.dumps(message) + "\\n")
    sys.stdout.flush()

argv = sys.argv[1:]
if "-machine" in argv and argv[argv.index("-machine") + 1].endswith(",help"):
    name = argv[argv.index("-machine") + 1][:-5]
    print(name + "-machine options:")
    for key, kind in RECORDED["help"].get(name, {{}}).items():
        print("  " + key + "=<" + kind + "> - a property")
    sys.exit(0)
send({{"QMP": {{"version": {{"qemu": {{"major": 7, "minor": 2, "micro": 22}}, "package": "recorded"}},
              "capabilities": []}}}})
for line in sys.stdin:
    message = json.loads(line)
    if message["execute"] == "quit":
        break
    send({{"event": "SOMETHING", "data": {{}}}})  # events come between answers: skipped
    reply = answer(RECORDED, message["execute"], message.get("arguments", {{}}))
    if reply[0] == "crash":
        sys.stderr.write("qemu: ../hw/i386/acpi-microvm.c:261: Assertion failed.\\n")
        os.abort()
    if reply[0] == "return":
        send({{"return": reply[1], "id": message.get("id")}})
    else:
        send({{"error": {{"class": reply[1], "desc": reply[2]}}, "id": message.get("id")}})
'''


class FakeQemu:
    """An executable recorded QEMU at ``path``; ``starts()`` are the argument lists it ran with."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log = path.with_suffix(".log")
        recorded = path.with_suffix(".json")
        recorded.write_text(json.dumps(RECORDED))
        path.write_text(FAKE_QEMU.format(python=sys.executable, recorded=str(recorded), log=str(self.log),
                                         answer=textwrap.dedent(inspect.getsource(answer))))
        path.chmod(0o755)

    def starts(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def fake_qemu(tmp_path: Path) -> FakeQemu:
    (tmp_path / "bin").mkdir()
    return FakeQemu(tmp_path / "bin" / "qemu-system-x86_64")


def plan_doc(argv: Sequence[str] = (), hotplug: Sequence[Any] = (), devices: Sequence[Any] = (),
             hypervisor: str = "qemu") -> dict[str, Any]:
    return {"hypervisor": hypervisor, "devices": list(devices),
            hypervisor: {"argv": list(argv), "hotplug": list(hotplug), "unplug": []}}


RNG_ARGV = ["-machine", "q35", "-m", "512M", "-object", "rng-random,id=rng0,filename=/dev/urandom",
            "-device", "virtio-rng-pci,rng=rng0,id=virtio-rng0"]


def test_the_first_check_asks_the_binary_and_the_next_ones_its_cached_answers(
    fake_qemu: FakeQemu, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = check_plan(plan_doc(RNG_ARGV, devices=[RNG]), Probe(str(fake_qemu.path), cache_dir=cache))
    assert (first.report.clean, first.probed, first.version, first.package) == (True, True, VERSION, "recorded")
    assert fake_qemu.starts() == ["-machine none -S -nodefaults -no-user-config -display none -qmp stdio"]
    (cached,) = cache.glob("qemu-*.json")
    assert cached.name.startswith("qemu-7.2.22-") and first.cache_file == str(cached)
    again = check_plan(plan_doc(RNG_ARGV, devices=[RNG]), Probe(str(fake_qemu.path), cache_dir=cache))
    assert (again.probed, again.cache_file, len(fake_qemu.starts())) == (False, str(cached), 1)
    # a plan with a type not asked about yet: only that is asked, and kept
    more = check_plan(plan_doc(["-device", "vfio-pci,host=x"]), Probe(str(fake_qemu.path), cache_dir=cache))
    assert (more.probed, len(fake_qemu.starts())) == (True, 2)
    saved = json.loads(cached.read_text())["facts"]["properties"]
    assert set(saved["device"]) == {"virtio-rng-pci", "vfio-pci"} and set(saved["machine"]) == {"pc-q35-7.2"}


def test_a_different_binary_or_a_rewritten_one_never_reuses_the_answers(fake_qemu: FakeQemu, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    other = FakeQemu(tmp_path / "bin" / "qemu-other")
    for binary in (fake_qemu.path, other.path, fake_qemu.path):
        check_plan(plan_doc(RNG_ARGV), Probe(str(binary), cache_dir=cache))
    assert (len(fake_qemu.starts()), len(other.starts())) == (1, 1)
    os.utime(fake_qemu.path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert check_plan(plan_doc(RNG_ARGV), Probe(str(fake_qemu.path), cache_dir=cache)).probed
    (tmp_path / "lib" / "x86_64-linux-gnu" / "qemu").mkdir(parents=True)  # its modules appear
    assert check_plan(plan_doc(RNG_ARGV), Probe(str(fake_qemu.path), cache_dir=cache)).probed
    assert len(fake_qemu.starts()) == 3
    assert len(list(cache.glob("qemu-*.json"))) == 4


def test_a_cache_file_for_another_binary_or_a_broken_one_is_never_used(fake_qemu: FakeQemu, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    check_plan(plan_doc(RNG_ARGV), Probe(str(fake_qemu.path), cache_dir=cache))
    (cached,) = cache.glob("qemu-*.json")
    record = json.loads(cached.read_text())
    for broken in ({**record, "binary": {**record["binary"], "size": 1}}, {**record, "format": 0}, "{not json"):
        cached.write_text(broken if isinstance(broken, str) else json.dumps(broken))
        assert check_plan(plan_doc(RNG_ARGV), Probe(str(fake_qemu.path), cache_dir=cache)).probed
    assert len(fake_qemu.starts()) == 4


def test_without_a_cache_nothing_is_kept(fake_qemu: FakeQemu, tmp_path: Path) -> None:
    for _ in range(2):
        outcome = check_plan(plan_doc(RNG_ARGV), Probe(str(fake_qemu.path), cache_dir=None))
        assert (outcome.probed, outcome.cache_file) == (True, None)
    assert len(fake_qemu.starts()) == 2


def test_a_type_that_kills_qemu_is_a_note_and_the_questions_go_on_in_a_new_qemu(
    fake_qemu: FakeQemu, tmp_path: Path
) -> None:
    argv = ["-device", "kills-qemu,x=1", "-device", "virtio-rng-pci,bogus=1"]
    outcome = check_plan(plan_doc(argv), Probe(str(fake_qemu.path), cache_dir=tmp_path / "cache"))
    assert [m.line() for m in outcome.report.mismatches] == [
        f"vmdev: check: sandbox: -device virtio-rng-pci,bogus: {Q}'s virtio-rng-pci has no property 'bogus'"]
    (note,) = outcome.report.notes
    assert note.problem == (f"{Q} could not list the properties of kills-qemu: QEMU stopped answering "
                            "device-list-properties: qemu: ../hw/i386/acpi-microvm.c:261: Assertion failed.")
    assert len(fake_qemu.starts()) == 2


def test_a_machine_that_kills_qemu_is_listed_by_machine_help(fake_qemu: FakeQemu, tmp_path: Path) -> None:
    argv = ["-machine", "microvm,isa-serial=off,acpi=on,pit=off", "-device", "virtio-rng-pci"]
    outcome = check_plan(plan_doc(argv), Probe(str(fake_qemu.path), cache_dir=tmp_path / "cache"))
    assert [m.line() for m in outcome.report.mismatches] == [
        f"vmdev: check: sandbox: -machine microvm,pit: {Q}'s machine microvm has no property 'pit'"]
    assert outcome.report.notes == ()
    assert fake_qemu.starts()[1:] == ["-machine microvm,help"]  # devices are asked first, machines last


def test_a_binary_that_is_not_qemu_or_not_there_is_a_one_line_error(tmp_path: Path) -> None:
    from vmdev.preflight import PreflightError

    not_qemu = tmp_path / "not-qemu"
    not_qemu.write_text("#!/bin/sh\necho hello\n")
    not_qemu.chmod(0o755)
    with pytest.raises(PreflightError, match=r"^qemu: .*not-qemu does not greet like QEMU's QMP$"):
        check_plan(plan_doc(RNG_ARGV), Probe(str(not_qemu)))
    dying = tmp_path / "dying"
    dying.write_text("#!/bin/sh\necho 'qemu: cannot open /dev/kvm' >&2\nexit 1\n")
    dying.chmod(0o755)
    with pytest.raises(PreflightError, match=r"^qemu: QEMU stopped answering greeting: qemu: cannot open /dev/kvm$"):
        check_plan(plan_doc(RNG_ARGV), Probe(str(dying)))
    with pytest.raises(PreflightError, match=r"^qemu: no executable 'qemu-system-nowhere' on PATH$"):
        Probe("qemu-system-nowhere")
    with pytest.raises(PreflightError, match=r"is not an executable file$"):
        Probe(str(tmp_path))


def test_the_default_cache_is_xdg_cache_home_when_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "vmdev"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "vmdev"


# --- the command -----------------------------------------------------------------------------------
@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("VMDEV_PLUGINS", "")  # the core alone, whatever else is installed
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return run


def write(tmp_path: Path, name: str, document: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


def test_check_of_a_clean_plan_exits_0_with_a_summary_on_stderr(cli: Any, fake_qemu: FakeQemu, tmp_path: Path) -> None:
    result = cli("check", "--qemu", str(fake_qemu.path), write(tmp_path, "p.json", plan_doc(RNG_ARGV, devices=[RNG])))
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr.startswith(f"vmdev: check: clean: 4 options and 0 QMP commands against {Q} "
                                    f"({fake_qemu.path}, asked in ")
    assert list((tmp_path / "xdg" / "vmdev").glob("qemu-7.2.22-*.json"))
    assert "cached answers)" in cli("check", "--qemu", str(fake_qemu.path), str(tmp_path / "p.json")).stderr


def test_check_prints_one_line_per_mismatch_and_exits_1(cli: Any, fake_qemu: FakeQemu, tmp_path: Path) -> None:
    document = plan_doc([*RNG_ARGV, "-device", "vfio-pci,id=vfio-1-0,iommufd=iommufd0"],
                        [qmp("object-add", **{"qom-type": "iommufd", "id": "iommufd0"})],
                        devices=[RNG, {"container_path": "/dev/vfio/devices/vfio0", "id": "vfio-1",
                                       "functions": [{"id": "vfio-1-0"}]}])
    path = write(tmp_path, "p.json", document)
    result = cli("check", "--qemu", str(fake_qemu.path), path)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"vmdev: check: /dev/vfio/devices/vfio0: -device vfio-pci,iommufd: {Q}'s vfio-pci has no property "
        "'iommufd'",
        f"vmdev: check: /dev/vfio/devices/vfio0: hotplug object-add iommufd: {Q} has no object type 'iommufd'"]
    assert result.stderr.startswith("vmdev: check: 2 mismatch(es): 5 options and 1 QMP commands")
    as_json = cli("check", "--qemu", str(fake_qemu.path), "--json", path)
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert (report["clean"], report["checked"]["options"], report["qemu"]["version"]) == (False, 5, VERSION)
    assert report["mismatches"][1] == {"device": "/dev/vfio/devices/vfio0", "option": "hotplug object-add iommufd",
                                       "problem": f"{Q} has no object type 'iommufd'", "source": "hotplug",
                                       "index": 0}


def test_a_plan_for_another_hypervisor_is_refused_in_one_line(cli: Any, fake_qemu: FakeQemu, tmp_path: Path) -> None:
    for hypervisor in ("cloud-hypervisor", "stratovirt"):
        path = write(tmp_path, f"{hypervisor}.json", plan_doc(RNG_ARGV, hypervisor=hypervisor))
        result = cli("check", "--qemu", str(fake_qemu.path), path)
        assert (result.exit_code, result.stdout) == (1, "")
        assert result.stderr == (f"vmdev: error: hypervisor: check --qemu asks a QEMU binary, but this plan is for "
                                 f"{hypervisor!r}; only plans for 'qemu' can be checked against one\n")
    assert fake_qemu.starts() == []


def test_an_oci_config_is_planned_first_with_plans_flags(cli: Any, fake_qemu: FakeQemu, tmp_path: Path) -> None:
    config = write(tmp_path, "config.json", {"ociVersion": "1.0.2", "linux": {"devices": [
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]}})
    result = cli("check", "--qemu", str(fake_qemu.path), "--json", "--memory", "256", "--machine-type", "pc",
                 config)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checked"] == {"options": 2, "qmp": 0, "unchecked": []}
    refused = cli("check", "--qemu", str(fake_qemu.path), "--hypervisor", "firecracker", config)
    assert (refused.exit_code, refused.stderr) == (1, "vmdev: error: hypervisor: check --qemu asks a QEMU binary, "
                                                      "but these settings plan for 'firecracker'\n")
    typo = cli("check", "--qemu", str(fake_qemu.path), "--machine-type", "q53", config)
    assert typo.stdout == f"vmdev: check: sandbox: -machine q53: {Q} has no machine 'q53' (did you mean 'q35'?)\n"


def test_planning_flags_with_a_plan_are_a_usage_error(cli: Any, fake_qemu: FakeQemu, tmp_path: Path) -> None:
    path = write(tmp_path, "p.json", plan_doc(RNG_ARGV))
    result = cli("check", "--qemu", str(fake_qemu.path), "--hotplug", path)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == f"Error: {path} is a plan already: planning options apply to an OCI " \
                                             "config only"
    assert cli("check", path).exit_code == 2  # --qemu is required


def test_unreadable_input_and_a_missing_binary_are_one_line_errors(cli: Any, tmp_path: Path) -> None:
    missing = cli("check", "--qemu", "qemu-system-nowhere", write(tmp_path, "p.json", plan_doc(RNG_ARGV)))
    assert (missing.exit_code, missing.stderr) == (1, "vmdev: error: qemu: no executable 'qemu-system-nowhere' on "
                                                      "PATH\n")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{")
    result = cli("check", "--qemu", "qemu-system-nowhere", str(garbage))
    assert result.exit_code == 1 and result.stderr.startswith(f"vmdev: error: {garbage}: not valid JSON: ")
    fifo = tmp_path / "fifo.json"  # opened as a file it would block until a writer came
    os.mkfifo(fifo)
    for source, reason in ((fifo, "not a regular file (a FIFO)"), (tmp_path / "no.json", "No such file or directory")):
        result = cli("check", "--qemu", "qemu-system-nowhere", str(source))
        assert (result.exit_code, result.stderr) == (1, f"vmdev: error: {source}: cannot read: {reason}\n")
