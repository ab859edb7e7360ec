"""``vmdev doctor``: readiness of a host for /dev/vfio paths, as text and JSON."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from vmdev.cli import main
from vmdev.testing import FakeHost, StartupProbe
from vmdev_vfio.doctor import diagnose, vfio_nodes


def checks(host: FakeHost, path: str) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.ok, c.detail) for c in diagnose(path, host.context()).checks}


def test_a_ready_multi_function_group(l1_host: FakeHost) -> None:
    found = checks(l1_host, "/dev/vfio/5")
    assert found["iommu"] == (True, "9 IOMMU groups (dmar0)")
    assert found["vfio-pci"][0]
    assert found["group"] == (True, "IOMMU group 5: 3 devices, 2 to pass, 1 bridge(s) skipped")
    assert found["0000:00:06.0"] == (True, "0x1b36:0x0001 class 0x060400, PCI-to-PCI bridge: skipped")
    assert found["0000:03:01.0"] == (True, "0x1234:0x11e8 class 0x00ff00 (PCI), bound to vfio-pci")
    assert found["viable"][0]
    assert found["node"] == (True, "/dev/vfio/5 (246:2) is a character device this user can open")
    assert found["control"][0]
    assert diagnose("/dev/vfio/5", l1_host.context()).ready


def test_a_group_on_a_host_driver_is_not_ready_nor_viable(l1_host: FakeHost) -> None:
    node = l1_host.pci_function("0000:00:03.0", vendor="0x8086", device="0x10d3", driver="e1000e",
                                iommu_group=2, config_size=4096)
    shutil.rmtree(node / "vfio-dev")  # the kernel removes vfio-dev/vfio0 when vfio-pci lets go
    found = checks(l1_host, "/dev/vfio/2")
    assert found["0000:00:03.0"][0] is False
    assert "(PCIe), bound to e1000e: bind it to vfio-pci" in found["0000:00:03.0"][1]
    assert found["viable"] == (False, "group 2 is not viable: host drivers use 0000:00:03.0 (e1000e)")
    assert not diagnose("/dev/vfio/2", l1_host.context()).ready


def test_an_unbound_function_keeps_the_group_viable_but_not_ready(l1_host: FakeHost) -> None:
    (l1_host.sysfs / "devices/pci0000:00/0000:00:06.0/0000:03:02.0/driver").unlink()
    found = checks(l1_host, "/dev/vfio/5")
    assert found["0000:03:02.0"][0] is False and "bound to no driver" in found["0000:03:02.0"][1]
    assert found["viable"][0] is True


def test_missing_things(fake_host: FakeHost) -> None:
    found = checks(fake_host, "/dev/vfio/3")
    assert found["iommu"][0] is False and "intel_iommu=on" in found["iommu"][1]
    assert found["vfio-pci"] == (False, "the vfio-pci driver is not loaded: modprobe vfio-pci")
    assert found["group"][0] is False
    assert found["node"][0] is False and "No such file or directory" in found["node"][1]
    assert checks(fake_host, "/dev/sda")["path"][0] is False


def test_a_regular_file_is_not_a_vfio_node(l1_host: FakeHost) -> None:
    l1_host.dev_file("vfio/6")
    l1_host.pci_function("0000:00:1f.0", class_code="0x060100", driver="vfio-pci", iommu_group=6)
    assert checks(l1_host, "/dev/vfio/6")["node"] == (False, "/dev/vfio/6 is not a character device")


def test_iommufd_cdev(l1_iommufd_host: FakeHost) -> None:
    found = checks(l1_iommufd_host, "/dev/vfio/devices/vfio4")
    assert found["cdev"] == (True, "vfio4 is 0000:01:00.0, IOMMU group 7")
    assert found["0000:01:00.0"][0] and found["viable"][0]
    assert found["node"] == (True, "/dev/vfio/devices/vfio4 (249:4) is a character device this user can open")
    assert found["iommufd"] == (True, "/dev/iommu (10:257) is a character device this user can open")


def test_cdev_on_a_kernel_without_iommufd(l1_host: FakeHost) -> None:
    found = checks(l1_host, "/dev/vfio/devices/vfio0")
    assert found["cdev"][0] is False and "CONFIG_VFIO_DEVICE_CDEV" in found["cdev"][1]
    assert found["iommufd"][0] is False


def test_every_node_is_listed(l1_iommufd_host: FakeHost) -> None:
    assert vfio_nodes(l1_iommufd_host.context()) == [
        "/dev/vfio/2", "/dev/vfio/5", "/dev/vfio/7", "/dev/vfio/8",
        *(f"/dev/vfio/devices/vfio{n}" for n in range(5)),
    ]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("VMDEV_PLUGINS", "vmdev-vfio")
    return CliRunner()


def real_char_nodes(host: FakeHost, *names: str) -> None:
    """The CLI stats for real: make the fake nodes links to /dev/null, a real character device."""
    for name in names:
        node = host.dev / name
        node.unlink(missing_ok=True)
        node.parent.mkdir(parents=True, exist_ok=True)
        node.symlink_to(os.devnull)


def run(runner: CliRunner, host: FakeHost, *args: str) -> tuple[int, str]:
    done = runner.invoke(main, ["doctor", "--sysfs-root", str(host.sysfs), "--dev-root", str(host.dev), *args])
    return done.exit_code, done.output


def test_cli_text_for_a_ready_group(runner: CliRunner, l1_host: FakeHost) -> None:
    real_char_nodes(l1_host, "vfio/8", "vfio/vfio")
    code, output = run(runner, l1_host, "/dev/vfio/8")
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0] == "/dev/vfio/8: ready"
    assert any(line.split()[:2] == ["ok", "0000:02:00.0"] and line.endswith("bound to vfio-pci") for line in lines)
    assert any(line.split()[:2] == ["ok", "node"] and "(1:3)" in line for line in lines)


def test_cli_json_and_exit_status_when_not_ready(runner: CliRunner, l1_host: FakeHost) -> None:
    real_char_nodes(l1_host, "vfio/2", "vfio/5", "vfio/7", "vfio/8", "vfio/vfio")
    (l1_host.sysfs / "devices/pci0000:00/0000:00:05.0/0000:02:00.0/driver").unlink()
    code, output = run(runner, l1_host, "--json")
    assert code == 1
    data = json.loads(output)
    assert [(d["path"], d["kind"], d["ready"]) for d in data] == [
        ("/dev/vfio/2", "group", True), ("/dev/vfio/5", "group", True), ("/dev/vfio/7", "group", True),
        ("/dev/vfio/8", "group", False)]
    failed = [c for c in data[3]["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["0000:02:00.0"]


def test_cli_with_nothing_to_check(runner: CliRunner, tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "empty")
    code, output = run(runner, host)
    assert code == 1
    assert output.splitlines()[0] == "/dev/vfio/: NOT READY"
    assert "no VFIO group or cdev under /dev/vfio" in output


def test_vmdev_help_lists_doctor_by_its_own_summary_without_importing_it(startup_probe: StartupProbe) -> None:
    from vmdev.commands import CommandSpec
    from vmdev.lazy import load_reference
    from vmdev_vfio.plugin import DOCTOR_SUMMARY, register_lazy_commands

    declared: list[CommandSpec] = []
    register_lazy_commands(declared.append)
    (spec,) = declared
    assert spec.name == "doctor"
    assert spec.summary == (load_reference(spec.target).help or "").split("\n")[0] == DOCTOR_SUMMARY
    report = startup_probe("vmdev-vfio", "--help")
    listing = report.stdout.rstrip("\n").split("\n")
    assert any(line.split()[:2] == ["doctor", "Check"] for line in listing), listing
    assert not {"vmdev_vfio.doctor", "vmdev_vfio.device", "vmdev_vfio.host"} & set(report.modules)
