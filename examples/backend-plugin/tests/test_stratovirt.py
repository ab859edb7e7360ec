"""The StratoVirt backend with vmdev, vmdev-rng and vmdev-block installed (and nothing else).

Devices are built by the real families on a fake host. StratoVirt itself cannot be installed here
(not in Debian 12, and its source build needs crates.io), so every command line is checked against
a model of StratoVirt's documented syntax: its option parser (split at ',' then '=', no escape) and
the options each device class takes (docs/config_guidebook.md; the clap structs RngObjConfig,
RngConfig, DriveConfig, VirtioBlkDevConfig, RootPortConfig), and QMP against docs/qmp.md.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Sequence
from typing import Any

import pytest
from click.testing import CliRunner

from acme_vmdev_stratovirt import families
from acme_vmdev_stratovirt.target import StratoVirtTarget
from vmdev.cli import main
from vmdev.errors import ConfigError, PluginError, UnsupportedError
from vmdev.manager import DeviceManager
from vmdev.models import DeviceInfo
from vmdev.oci import OciSpec, parse_spec
from vmdev.planner import Plan, plan
from vmdev.settings import SandboxSettings, load_settings
from vmdev.testing import FakeHost

DISTRIBUTIONS = ("acme-vmdev-stratovirt", "vmdev-rng", "vmdev-block")
NULL = {"path": "/dev/null", "type": "c", "major": 1, "minor": 3}


def disk(path: str = "/dev/xda", minor: int = 0) -> dict[str, Any]:
    return {"path": path, "type": "b", "major": 8, "minor": minor}


def spec(*devices: dict[str, Any]) -> OciSpec:
    return parse_spec({"linux": {"devices": list(devices)}})


# --- a model of StratoVirt's documented command line ---------------------------------------------
#: per device class: (required options, every option it takes)
CLASSES: dict[str, tuple[set[str], set[str]]] = {
    "rng-random": ({"id", "filename"}, {"id", "filename"}),
    "virtio-rng-pci": ({"rng", "bus", "addr"}, {"id", "rng", "max-bytes", "period", "bus", "addr", "multifunction"}),
    "virtio-rng-device": ({"rng"}, {"id", "rng", "max-bytes", "period"}),
    "drive": ({"id", "file"}, {"id", "if", "unit", "file", "readonly", "direct", "throttling.iops-total", "aio",
                               "media", "discard", "detect-zeroes", "format", "l2-cache-size", "refcount-cache-size"}),
    "virtio-blk-pci": ({"id", "drive", "bus", "addr"}, {"id", "drive", "bus", "addr", "multifunction", "bootindex",
                                                         "num-queues", "iothread", "queue-size", "serial"}),
    "virtio-blk-device": ({"id", "drive"}, {"id", "drive", "bootindex", "num-queues", "iothread", "queue-size",
                                            "serial"}),
    "pcie-root-port": ({"port", "id", "bus", "addr"}, {"port", "id", "bus", "addr", "multifunction", "chassis"}),
}
BOOLEANS = {"readonly", "direct", "multifunction"}
HOT_PLUGGABLE = {"virtio-blk-pci", "virtio-net-pci", "vfio-pci", "virtio-blk-mmio", "virtio-net-mmio"}


def stratovirt_split(text: str, *, head: bool) -> tuple[str, dict[str, str]]:
    """What StratoVirt's parser makes of one option: split at every ',', then every '='."""
    parts = text.split(",")
    kind = parts.pop(0) if head else "drive"
    values: dict[str, str] = {}
    for part in parts:
        pieces = part.split("=")
        assert len(pieces) == 2, f"{part!r} is not one key=value for StratoVirt"
        assert pieces[0] not in values, f"{pieces[0]} given twice in {text!r}"
        values[pieces[0]] = pieces[1]
    return kind, values


def pci_df(addr: str) -> tuple[int, int]:
    """StratoVirt's get_pci_df: ``slot[.function]``, hex (0x) or decimal, slot <= 31, function <= 7."""
    fields = [int(f, 16) if f.startswith("0x") else int(f) for f in addr.split(".")]
    assert 1 <= len(fields) <= 2 and fields[0] <= 31 and (len(fields) == 1 or fields[1] <= 7), addr
    return fields[0], fields[1] if len(fields) == 2 else 0


def check_argv(argv: Sequence[str], machine: str = "q35") -> dict[str, dict[str, dict[str, str]]]:
    """Assert that StratoVirt accepts ``argv`` as documented; the parsed options by class."""
    assert list(argv[:2]) == ["-machine", machine] and argv[2] == "-m" and re.fullmatch(r"\d+M", argv[3])
    found: dict[str, dict[str, dict[str, str]]] = {}
    for flag, value in zip(argv[4::2], argv[5::2], strict=True):
        assert flag in ("-object", "-device", "-drive"), flag
        kind, values = stratovirt_split(value, head=flag != "-drive")
        required, allowed = CLASSES[kind]
        assert required <= set(values) <= allowed, (kind, sorted(values))
        assert all(values[key] in ("on", "off") for key in BOOLEANS & set(values)), values
        if (machine == "microvm") != kind.endswith("-device") and kind.startswith("virtio-"):
            raise AssertionError(f"{kind} on machine {machine}")
        assert values["id"] not in found.setdefault(kind, {}), f"id {values['id']} twice"
        found[kind][values["id"]] = values
    _check_references(found)
    return found


def _check_references(found: dict[str, dict[str, dict[str, str]]]) -> None:
    ports = found.get("pcie-root-port", {})
    slots: set[int] = set()
    for kind, devices in found.items():
        for values in devices.values():
            if "rng" in values:
                assert values["rng"] in found["rng-random"]
            if kind.startswith("virtio-blk"):
                assert values["drive"] in found["drive"]
            if "addr" in values:
                slot, _ = pci_df(values["addr"])
                assert values["bus"] == "pcie.0" and slot not in (0, 0x1F) and slot not in slots, values
                slots.add(slot)
    assert all(int(p["port"], 16) >= 1 for p in ports.values())


def check_qmp(hotplug: Sequence[dict[str, Any]], ports: dict[str, dict[str, str]]) -> None:
    """docs/qmp.md: blockdev-add (node-name, file, cache, read-only) then device_add into a root port."""
    nodes = set()
    for command in hotplug:
        args = command["arguments"]
        if command["execute"] == "blockdev-add":
            assert set(args) <= {"node-name", "file", "cache", "read-only"} and args["file"]["driver"] == "file"
            nodes.add(args["node-name"])
        else:
            assert command["execute"] == "device_add"
            assert args["driver"] in HOT_PLUGGABLE and args["bus"] in ports and pci_df(args["addr"]) == (0, 0)
            assert args["drive"] in nodes and args["id"] == args["drive"]
            stratovirt_split(",".join(f"{k}={v}" for k, v in args.items()), head=False)  # add_device_config


# --- fixtures --------------------------------------------------------------------------------------
@pytest.fixture
def host(fake_host: FakeHost) -> FakeHost:
    fake_host.dev_file("urandom")
    fake_host.dev_file("random")
    for minor, name in enumerate(("sda", "sdb")):
        fake_host.block_device(8, minor, name)
        fake_host.fake_stat(str(fake_host.dev / name), mode=stat.S_IFBLK | 0o660, rdev=(8, minor))
    return fake_host


@pytest.fixture
def run(host: FakeHost, vmdev_plugins: Any) -> Any:
    pm = vmdev_plugins(*DISTRIBUTIONS)

    def run(*devices: dict[str, Any], **settings: Any) -> Plan:
        options = {"block_device_driver": "virtio-blk", **settings.pop("options", {})}
        sandbox = SandboxSettings(hypervisor="stratovirt", options=options, **settings)
        return plan(spec(*devices), sandbox, host=host.context(), plugins=pm)

    return run


# --- the backend -----------------------------------------------------------------------------------
def test_the_backend_is_registered_with_its_plugin_and_distribution(vmdev_plugins: Any) -> None:
    registered = vmdev_plugins(*DISTRIBUTIONS).backends().get("stratovirt")
    assert registered.to_json() == {
        "name": "stratovirt",
        "description": "StratoVirt: command-line options (q35, virt, microvm) and QMP hot plug of disks",
        "kata_sections": ["stratovirt"],
        "plan_key": "stratovirt",
        "live": False,
        "plugin": "stratovirt",
        "distribution": "acme-vmdev-stratovirt",
    }


def test_an_rng_and_a_disk_cold_plugged_on_q35(run: Any) -> None:
    result = run(disk(), NULL, memory_mib=512)
    (drive_id,) = [d.id for d in result.devices if d.kind == "block"]
    assert list(result.part("stratovirt").argv) == [
        "-machine", "q35", "-m", "512M",
        "-drive", f"id={drive_id},file=/dev/sda,readonly=off,direct=off",
        "-device", f"virtio-blk-pci,id={drive_id},drive={drive_id},bus=pcie.0,addr=0x1",
        "-object", "rng-random,id=rng0,filename=/dev/urandom",
        "-device", "virtio-rng-pci,id=virtio-rng0,rng=rng0,bus=pcie.0,addr=0x2",
    ]
    assert result.to_json()["stratovirt"]["hotplug"] == [] and result.to_json()["stratovirt"]["unplug"] == []
    assert [d.kind for d in result.devices] == ["block", "generic", "rng"]
    check_argv(result.part("stratovirt").argv)


def test_microvm_takes_virtio_mmio_devices_without_addresses(run: Any) -> None:
    result = run(disk(), machine_type="microvm")
    found = check_argv(result.part("stratovirt").argv, machine="microvm")
    assert sorted(found) == ["drive", "rng-random", "virtio-blk-device", "virtio-rng-device"]
    assert found["virtio-rng-device"]["virtio-rng0"] == {"id": "virtio-rng0", "rng": "rng0"}


def test_kata_virtio_mmio_driver_on_microvm_is_virtio_blk_device(run: Any) -> None:
    argv = run(disk(), machine_type="microvm", options={"block_device_driver": "virtio-mmio"}).part("stratovirt").argv
    assert any(a.startswith("virtio-blk-device,") for a in argv)


def test_a_hot_plugged_disk_goes_behind_a_root_port_added_at_boot(run: Any) -> None:
    result = run(disk(), disk("/dev/xdb", 1), hotplug=True)
    data = result.to_json()["stratovirt"]
    found = check_argv(result.part("stratovirt").argv)
    assert found["pcie-root-port"] == {
        "pcie.1": {"id": "pcie.1", "port": "0x1", "bus": "pcie.0", "addr": "0x1"},
        "pcie.2": {"id": "pcie.2", "port": "0x2", "bus": "pcie.0", "addr": "0x2"},
    }
    assert "virtio-rng-pci" in found  # StratoVirt cannot hot-plug an RNG: it stays on the command line
    check_qmp(data["hotplug"], found["pcie-root-port"])
    first = result.devices[0].id
    assert data["hotplug"][:2] == [
        {"execute": "blockdev-add", "arguments": {"node-name": first, "file": {"driver": "file", "filename": "/dev/sda"},
                                                  "cache": {"direct": False}, "read-only": False}},
        {"execute": "device_add", "arguments": {"id": first, "driver": "virtio-blk-pci", "drive": first,
                                                "bus": "pcie.1", "addr": "0x0"}},
    ]
    assert [c["execute"] for c in data["unplug"]] == ["device_del", "blockdev-del"] * 2
    assert data["unplug"][0]["arguments"] == {"id": result.devices[1].id}  # unplug in reverse order
    assert [d.hotplug for d in result.devices] == [True, True, False]


def test_a_read_only_request_is_a_read_only_drive(host: FakeHost, vmdev_plugins: Any) -> None:
    rules = [{"allow": True, "type": "b", "major": 8, "minor": 0, "access": "r"}]
    request = parse_spec({"linux": {"devices": [disk()], "resources": {"devices": rules}}})
    pm = vmdev_plugins(*DISTRIBUTIONS)
    for hot in (False, True):
        settings = SandboxSettings(hypervisor="stratovirt", hotplug=hot, options={"block_device_driver": "virtio-blk"})
        data = plan(request, settings, host=host.context(), plugins=pm).to_json()["stratovirt"]
        if hot:
            assert data["hotplug"][0]["arguments"]["read-only"] is True
        else:
            (drive,) = check_argv(data["argv"])["drive"].values()
            assert drive["readonly"] == "on"


def test_the_plan_prints_as_an_argv_line(run: Any) -> None:
    assert run().argv_text() == (
        "-machine q35 -m 2048M -object rng-random,id=rng0,filename=/dev/urandom "
        "-device virtio-rng-pci,id=virtio-rng0,rng=rng0,bus=pcie.0,addr=0x1"
    )


# --- what StratoVirt cannot take -----------------------------------------------------------------
def test_a_comma_in_a_path_is_refused_not_escaped(run: Any, host: FakeHost) -> None:
    odd = "/dev/odd,filename=/etc/shadow"
    host.dev_file("odd,filename=/etc/shadow")
    with pytest.raises(UnsupportedError) as exc:
        run(options={"entropy_source": odd, "valid_entropy_sources": [odd]})
    assert str(exc.value) == (
        "rng0: entropy_source: StratoVirt cannot take '/dev/odd,filename=/etc/shadow': it splits options "
        "at ',' and '=' and has no escape"
    )


def test_the_empty_entropy_source_is_urandom_on_stratovirt(run: Any) -> None:
    argv = run(options={"entropy_source": ""}).part("stratovirt").argv
    assert "rng-random,id=rng0,filename=/dev/urandom" in argv


def test_virtio_scsi_is_refused_naming_the_driver_key(run: Any) -> None:
    with pytest.raises(UnsupportedError) as exc:
        run(disk(), options={"block_device_driver": "virtio-scsi"})
    assert str(exc.value) == (
        "/dev/xda: block_device_driver: StratoVirt disks are virtio-blk here; block_device_driver "
        "'virtio-scsi' cannot be honoured (set block_device_driver = 'virtio-blk')"
    )


def test_virtio_mmio_needs_microvm(run: Any) -> None:
    with pytest.raises(UnsupportedError, match="'virtio-mmio' needs machine microvm, not q35"):
        run(disk(), options={"block_device_driver": "virtio-mmio"})


def test_hot_plug_on_microvm_is_refused(run: Any) -> None:
    with pytest.raises(UnsupportedError, match="on microvm cold-plug the device") as exc:
        run(disk(), machine_type="microvm", hotplug=True)
    assert (exc.value.device, exc.value.field) == ("/dev/xda", "hotplug")


@pytest.mark.parametrize(("settings", "field", "message"), [
    ({"machine_type": "pc"}, "machine_type", "StratoVirt has no machine 'pc' (one of microvm, q35, virt)"),
    ({"memory_mib": 64}, "default_memory", "StratoVirt takes 128 MiB to 524288 MiB of guest memory, not 64"),
])
def test_machines_and_memory_stratovirt_has_not_are_one_line_errors(
    run: Any, settings: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        run(**settings)
    assert str(exc.value) == f"{field}: {message}"


def test_pcie0_runs_out_of_slots_after_0x1e() -> None:
    target = StratoVirtTarget(SandboxSettings(hypervisor="stratovirt"))
    places = [target.cold_place(f"d{n}")["addr"] for n in range(30)]
    assert places[0] == "0x1" and places[-1] == "0x1e" and len(set(places)) == 30
    with pytest.raises(UnsupportedError, match=r"pcie\.0 has no free slot left") as exc:
        target.cold_place("d30")
    assert (exc.value.device, exc.value.field) == ("d30", "addr")


def test_the_device_manager_keeps_the_books_of_a_stratovirt_sandbox(host: FakeHost, vmdev_plugins: Any) -> None:
    settings = SandboxSettings(hypervisor="stratovirt", hotplug=True, options={"block_device_driver": "virtio-blk"})
    manager = DeviceManager(settings, host=host.context(), plugins=vmdev_plugins(*DISTRIBUTIONS))
    boot = manager.plan_boot(spec(disk()))
    assert "pcie-root-port,id=pcie.1,port=0x1,bus=pcie.0,addr=0x1" in boot.part("stratovirt").argv
    assert [(p.id, p.kind) for p in manager.snapshot().ports] == [("pcie.1", "root-port")]
    record = manager.add_device(DeviceInfo(container_path="/dev/xda", dev_type="b", major=8, minor=0), user="c1")
    assert record.attachment is not None and record.attachment.buses == ("pcie.1",)
    assert record.attachment.details == {"driver": "virtio-blk-pci", "bus": "pcie.1"}


# --- families it does not know, or that are not installed ------------------------------------------
def test_a_family_that_is_not_installed_is_skipped(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "vmdev_rng", None)  # importing it now fails
    assert families.FAMILIES[0].model_class() is None
    with pytest.raises(PluginError) as exc:
        run()
    assert str(exc.value) == (
        "rng0: hypervisor: no plugin renders rng devices for the stratovirt backend (neither the plugin "
        "that built it nor the backend's plugin answered attach_options)"
    )


def test_the_backend_renders_only_for_its_own_target(run: Any, host: FakeHost, vmdev_plugins: Any) -> None:
    qemu = plan(spec(disk()), SandboxSettings(options={"block_device_driver": "virtio-blk"}),
                host=host.context(), plugins=vmdev_plugins(*DISTRIBUTIONS))
    assert [d.plugin for d in qemu.devices] == ["block", "rng"] and qemu.qemu is not None


# --- installation: Kata's configuration, the command line --------------------------------------------
def test_kata_configuration_stratovirt_selects_the_backend(tmp_path: Any, host: FakeHost, vmdev_plugins: Any) -> None:
    config = tmp_path / "configuration-stratovirt.toml"
    config.write_text(
        '[hypervisor.stratovirt]\npath = "/usr/bin/stratovirt"\nmachine_type = "microvm"\n'
        'default_memory = 1024\nblock_device_driver = "virtio-mmio"\nentropy_source = "/dev/random"\n'
    )
    pm = vmdev_plugins(*DISTRIBUTIONS)
    settings = load_settings(config, plugins=pm)
    assert (settings.hypervisor, settings.machine_type, settings.memory_mib) == ("stratovirt", "microvm", 1024)
    result = plan(spec(disk()), settings, host=host.context(), plugins=pm)
    found = check_argv(result.part("stratovirt").argv, machine="microvm")
    assert found["rng-random"]["rng0"]["filename"] == "/dev/random" and "virtio-blk-device" in found


def test_without_the_plugin_stratovirt_is_a_one_line_error_listing_the_backends(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("VMDEV_PLUGINS", ",".join(DISTRIBUTIONS))
    monkeypatch.setenv("VMDEV_DISABLE_PLUGINS", "stratovirt")
    config = tmp_path / "config.json"
    config.write_text("{}")
    result = CliRunner().invoke(main, ["plan", "--hypervisor", "stratovirt", str(config)])
    assert (result.exit_code, result.output) == (1, (
        "vmdev: error: hypervisor: no installed backend is called 'stratovirt' "
        "(installed: cloud-hypervisor, firecracker, qemu)\n"
    ))


def test_vmdev_backends_lists_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMDEV_PLUGINS", "acme-vmdev-stratovirt")
    result = CliRunner().invoke(main, ["backends"])
    assert result.exit_code == 0, result.output
    assert "stratovirt  (stratovirt, acme-vmdev-stratovirt; plans only; reads [hypervisor.stratovirt])" in (
        result.output.splitlines())
