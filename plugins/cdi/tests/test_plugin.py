"""CDI as an input source of vmdev plan: annotations and cdi_devices become device requests that
the other plugins build (generic, VFIO, block), and the plan's ``cdi`` section hands the runtime
and the guest what they need (Kata's handoff)."""

from __future__ import annotations

import importlib
import json
import stat
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vmdev.errors import ConfigError, VmdevError
from vmdev.oci import parse_spec
from vmdev.planner import Plan, plan
from vmdev.settings import SandboxSettings
from vmdev.testing import FakeHost
from vmdev_cdi import handoff
from vmdev_cdi.errors import CDIError, UnresolvableError

P = "cdi.k8s.io/"
NULL_SPEC = """
cdiVersion: "0.7.0"
kind: vendor.com/null
containerEdits:
  env: [VENDOR=1]
  hooks: [{hookName: createContainer, path: /usr/bin/vendor-hook, args: [vendor-hook, prepare]}]
devices:
  - name: a
    containerEdits:
      deviceNodes: [{path: /dev/null}, {path: /dev/zero, permissions: r}]
      mounts: [{hostPath: /opt/lib/libvendor.so, containerPath: /usr/lib/libvendor.so, options: [ro, bind], type: bind}]
      additionalGids: [44]
  - name: b
    containerEdits:
      env: [B=1]
"""


@pytest.fixture
def host(fake_host: FakeHost) -> FakeHost:
    fake_host.char_device(1, 3, "null")
    fake_host.char_device(1, 5, "zero")
    fake_host.fake_stat(str(fake_host.dev / "null"), mode=stat.S_IFCHR | 0o666, rdev=(1, 3))
    fake_host.fake_stat(str(fake_host.dev / "zero"), mode=stat.S_IFCHR | 0o666, rdev=(1, 5))
    return fake_host


@pytest.fixture
def cdi_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "cdi"
    directory.mkdir()
    (directory / "null.yaml").write_text(textwrap.dedent(NULL_SPEC))
    return directory


@pytest.fixture
def run(vmdev_plugins: Any, host: FakeHost, cdi_dir: Path) -> Any:
    def make(document: dict[str, Any], *dists: str, host_: FakeHost | None = None, hotplug: bool = False,
             **options: Any) -> Plan:
        pm = vmdev_plugins("vmdev-cdi", *dists)
        options.setdefault("cdi_spec_dirs", [str(cdi_dir)])
        settings = SandboxSettings(options=options, hotplug=hotplug)
        return plan(parse_spec(document), settings, host=(host_ or host).context(), plugins=pm)

    return make


def test_the_plugin_is_found_through_its_entry_point(vmdev_plugins: Any) -> None:
    info = {i.name: i for i in vmdev_plugins("vmdev-cdi").list_plugins()}["cdi"]
    assert info.distribution == "vmdev-cdi"
    assert info.hooks == ("device_requests", "finish_plan", "register_lazy_commands", "register_settings")


def test_settings_are_declared_with_defaults_and_flags(vmdev_plugins: Any) -> None:
    pm = vmdev_plugins("vmdev-cdi")
    declared = {d.setting.name: d for d in pm.declared_settings() if d.plugin == "cdi"}
    assert declared["cdi_spec_dirs"].setting.default == ("/etc/cdi", "/var/run/cdi")
    assert declared["cdi_spec_dirs"].setting.flag == "--cdi-spec-dir"
    assert declared["cdi_devices"].setting.flag == "--cdi-device"
    settings = pm.prepare_settings(SandboxSettings())
    assert settings.value("cdi_spec_dirs") == ("/etc/cdi", "/var/run/cdi") and settings.value("cdi_devices") == ()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cdi_devices": ["vendor.com/null"]}, 'cdi_devices: unqualified device "vendor.com/null", missing vendor'),
        ({"cdi_devices": "vendor.com/null=a"}, "cdi_devices: must be a list of strings"),
        ({"cdi_spec_dirs": [""]}, "cdi_spec_dirs: a spec directory must not be empty"),
    ],
)
def test_bad_settings_are_one_line_errors_naming_the_key(vmdev_plugins: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        vmdev_plugins("vmdev-cdi").prepare_settings(SandboxSettings(options=options))
    assert str(caught.value).startswith(message)


def test_an_annotation_makes_its_device_nodes_device_requests(run: Any) -> None:
    result = run({"annotations": {P + "test": "vendor.com/null=a"}})
    assert [(d.container_path, d.kind, d.plugin) for d in result.devices] == [
        ("/dev/null", "generic", "vmdev.generic"), ("/dev/zero", "generic", "vmdev.generic")]
    assert (result.devices[0].device.major, result.devices[0].device.minor) == (1, 3)


def test_no_cdi_request_no_requests_and_no_section(run: Any) -> None:
    result = run({"annotations": {"other": "x"}, "linux": {"devices": []}})
    assert result.devices == () and "cdi" not in result.to_json()


def test_cdi_devices_is_cris_field_and_a_name_is_injected_once(run: Any) -> None:
    result = run({"annotations": {P + "x": "vendor.com/null=b"}}, cdi_devices=["vendor.com/null=a", "vendor.com/null=b"])
    section = result.extras["cdi"]
    assert section["devices"] == ["vendor.com/null=b", "vendor.com/null=a"]
    assert section["oci_spec"]["process"]["env"] == ["VENDOR=1", "B=1"]
    assert len(result.devices) == 2


def test_the_section_says_what_came_from_where_and_carries_the_container_edits(run: Any, cdi_dir: Path) -> None:
    result = run({"annotations": {P + "test": "vendor.com/null=a", "io.kubernetes.cri.sandbox-name": "pod"},
                  "process": {"env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}},
                  "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}]})
    section = json.loads(json.dumps(result.to_json()))["cdi"]
    assert section["spec_dirs"] == [str(cdi_dir)] and section["annotation_keys"] == [P + "test"]
    assert section["injected"] == [{"name": "vendor.com/null=a", "spec": f"{cdi_dir}/null.yaml", "priority": 0,
                                    "device_nodes": ["/dev/null", "/dev/zero"],
                                    "planned": [d.id for d in result.devices]}]
    assert section["container_edits"] == {
        "process": {"env": ["VENDOR=1"], "user": {"additionalGids": [44]}},
        "mounts": [{"destination": "/usr/lib/libvendor.so", "type": "bind", "source": "/opt/lib/libvendor.so",
                    "options": ["ro", "bind"]}],
        "hooks": {"createContainer": [{"path": "/usr/bin/vendor-hook", "args": ["vendor-hook", "prepare"]}]},
    }
    oci = section["oci_spec"]
    assert oci["annotations"] == {"io.kubernetes.cri.sandbox-name": "pod"}  # the host's cdi.k8s.io/ keys are gone
    assert oci["process"]["env"] == ["PATH=/bin", "VENDOR=1"]
    assert [m["destination"] for m in oci["mounts"]] == ["/proc", "/usr/lib/libvendor.so"]
    assert oci["linux"]["resources"]["devices"][1] == {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}
    assert section["guest"] == {"annotations": {}, "pci_paths": {}, "specs": []}


def test_the_read_only_rule_and_ids_are_read_from_the_edited_spec_as_kata_reads_them(run: Any) -> None:
    result = run({"annotations": {P + "t": "vendor.com/null=a"}, "process": {"user": {"uid": 1000, "gid": 1000}}})
    zero = next(d for d in result.devices if d.container_path == "/dev/zero")
    assert (zero.device.uid, zero.device.gid) == (1000, 1000)


def test_an_unresolvable_name_is_one_line_naming_it_and_the_directories(run: Any, cdi_dir: Path) -> None:
    (cdi_dir / "broken.yaml").write_text("cdiVersion: 0.3.0\n")
    with pytest.raises(UnresolvableError) as caught:
        run({"annotations": {P + "t": "vendor.com/null=zz,vendor.com/null=a"}}, cdi_devices=["nvidia.com/gpu=0"])
    assert str(caught.value) == (f"unresolvable CDI devices vendor.com/null=zz, nvidia.com/gpu=0 (searched {cdi_dir}); "
                                 "1 spec file there failed to load (vmdev cdi list shows why)")


def test_the_default_directories_are_searched(run: Any) -> None:
    with pytest.raises(UnresolvableError, match=r"\(searched /etc/cdi, /var/run/cdi\)$"):
        run({"annotations": {P + "t": "vmdev-test.invalid/none=x"}}, cdi_spec_dirs=[])


def test_a_bad_annotation_value_fails_as_kata_fails(run: Any) -> None:
    with pytest.raises(CDIError) as caught:
        run({"annotations": {P + "t": "vendor.com/null=a, vendor.com/null=b"}})
    assert str(caught.value) == 'annotations: failed to parse CDI device annotations: invalid CDI device name " vendor.com/null=b"'


def test_a_node_that_cannot_be_filled_fails_the_injection(run: Any, cdi_dir: Path) -> None:
    (cdi_dir / "gone.yaml").write_text('cdiVersion: "0.3.0"\nkind: a.com/b\ndevices: [{name: d, containerEdits: {deviceNodes: [{path: /dev/gone}]}}]\n')
    with pytest.raises(CDIError) as caught:
        run({"annotations": {P + "t": "a.com/b=d"}})
    assert str(caught.value).startswith('CDI device injection failed: failed to stat CDI host device "/dev/gone": ')


def test_a_node_the_oci_spec_already_lists_is_requested_once_or_refused_if_different(run: Any) -> None:
    same = {"path": "/dev/null", "type": "c", "major": 1, "minor": 3}
    result = run({"annotations": {P + "t": "vendor.com/null=a"}, "linux": {"devices": [same]}})
    assert [d.container_path for d in result.devices] == ["/dev/null", "/dev/zero"]
    with pytest.raises(CDIError) as caught:
        run({"annotations": {P + "t": "vendor.com/null=a"}, "linux": {"devices": [{**same, "minor": 7}]}})
    assert str(caught.value) == "/dev/null: path: a CDI device injects c 1:3 here, but linux.devices already has c 1:7"


def test_a_broken_spec_elsewhere_does_not_stop_planning(run: Any, cdi_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    (cdi_dir / "broken.yaml").write_text("kind: a\nkind: b\n")
    result = run({"annotations": {P + "t": "vendor.com/null=b"}})
    assert result.extras["cdi"]["devices"] == ["vendor.com/null=b"]
    assert "broken.yaml" in caplog.text and "\n  line 2" not in caplog.text


def test_vmdev_plan_takes_the_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cdi_dir: Path) -> None:
    monkeypatch.setenv("VMDEV_PLUGINS", "vmdev-cdi")
    from vmdev.cli import main

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"annotations": {}}))
    result = CliRunner().invoke(main, ["plan", "--cdi-spec-dir", str(cdi_dir), "--cdi-device", "vendor.com/null=b",
                                       str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cdi"]["oci_spec"]["process"]["env"] == ["VENDOR=1", "B=1"]
    result = CliRunner().invoke(main, ["plan", "--cdi-spec-dir", str(cdi_dir), "--cdi-device", "vendor.com/null=q",
                                       str(config)], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stderr == f"vmdev: error: unresolvable CDI devices vendor.com/null=q (searched {cdi_dir})\n"


# --- a VFIO group named only by a CDI annotation ---------------------------------------------------
VFIO_SPEC = """
cdiVersion: "0.5.0"
kind: nvidia.com/pgpu
containerEdits:
  env: [NVIDIA_VISIBLE_DEVICES=void]
devices:
  - name: "0"
    containerEdits:
      deviceNodes: [{path: /dev/vfio/8}]
  - name: "1"
    containerEdits:
      deviceNodes: [{path: /dev/vfio/5}]
"""


def plugin_testing(family: str) -> Any:
    """The ``testing`` module of the plugin a test plans a CDI-named device through. vmdev-cdi works
    without it, but these tests need it: missing, they fail naming the command that installs it."""
    try:
        return importlib.import_module(f"vmdev_{family}.testing")
    except ImportError:
        pytest.fail(f"this test plans through vmdev-{family}, which is not installed: run it with "
                    f"`tox -e cdi` or `pip install -e plugins/{family}`", pytrace=False)


@pytest.fixture
def l1(fake_host: FakeHost) -> FakeHost:
    testing = plugin_testing("vfio")
    host: FakeHost = testing.build_l1_host(fake_host)
    return host


def test_a_vfio_group_named_by_cdi_is_passed_through_and_named_for_the_guest(run: Any, l1: FakeHost, cdi_dir: Path) -> None:
    (cdi_dir / "pgpu.yaml").write_text(VFIO_SPEC)
    result = run({"annotations": {P + "nvidia": "nvidia.com/pgpu=1,nvidia.com/pgpu=0"}}, "vmdev-vfio", host_=l1,
                 cold_plug_vfio="root-port")
    assert [(d.container_path, d.kind, d.plugin, d.hotplug) for d in result.devices] == [
        ("/dev/vfio/5", "vfio", "vfio", False), ("/dev/vfio/8", "vfio", "vfio", False)]
    argv = result.qemu.argv
    assert "vfio-pci,host=0000:02:00.0,id=" + result.devices[1].device.functions[0].id + ",bus=rp1" in argv
    guest = result.extras["cdi"]["guest"]
    assert guest["pci_paths"] == {"/dev/vfio/5": ["01/00", "01/00"], "/dev/vfio/8": ["02/00"]}
    assert guest["annotations"] == {P + "vfio5": "vmdev.io/vfio=0", P + "vfio8": "vmdev.io/vfio=1"}
    (spec,) = guest["specs"]
    assert spec["path"] == "/var/run/cdi/vmdev.io-vfio.json"
    assert spec["spec"]["cdiVersion"] == "0.6.0" and spec["spec"]["kind"] == "vmdev.io/vfio"
    assert spec["spec"]["devices"][1] == {
        "name": "1",
        "annotations": {"vmdev.io/host-bdf": "0000:02:00.0", "vmdev.io/host-path": "/dev/vfio/8", "vmdev.io/pci-path": "02/00"},
        "containerEdits": {"env": ["VMDEV_VFIO8_HOST_BDF=0000:02:00.0", "VMDEV_VFIO8_PCI_PATH=02/00"]},
    }
    oci = result.extras["cdi"]["oci_spec"]
    assert oci["annotations"] == guest["annotations"]
    assert [d["path"] for d in oci["linux"]["devices"]] == ["/dev/vfio/5", "/dev/vfio/8"]


def test_the_guest_spec_reads_back_as_a_valid_cdi_spec_naming_the_guest_devices(run: Any, l1: FakeHost, cdi_dir: Path,
                                                                               tmp_path: Path) -> None:
    from vmdev_cdi import Registry

    (cdi_dir / "pgpu.yaml").write_text(VFIO_SPEC)
    result = run({"annotations": {P + "nvidia": "nvidia.com/pgpu=0"}}, "vmdev-vfio", host_=l1, cold_plug_vfio="bridge-port")
    (spec,) = result.extras["cdi"]["guest"]["specs"]
    guest_dir = tmp_path / "guest"
    guest_dir.mkdir()
    (guest_dir / "vmdev.io-vfio.json").write_text(json.dumps(spec["spec"]))
    oci: dict[str, Any] = {"annotations": result.extras["cdi"]["oci_spec"]["annotations"]}
    from vmdev_cdi import parse_annotations

    _, names = parse_annotations(oci["annotations"])
    assert names == ["vmdev.io/vfio=0"]
    Registry([str(guest_dir)]).inject_devices(oci, names)  # what the agent does in the guest
    assert oci["process"]["env"] == ["VMDEV_VFIO8_HOST_BDF=0000:02:00.0", "VMDEV_VFIO8_PCI_PATH=01/01"]


def test_guest_kinds_follow_kata_s_table() -> None:
    assert handoff.kind_for("0x10de", "0x030200") == "nvidia.com/gpu"
    assert handoff.kind_for("0x10de", "0x030000") == "nvidia.com/gpu"
    assert handoff.kind_for("0x1002", "0x030000") == "amd.com/gpu"
    assert handoff.kind_for("0x1002", "0x038000") == "vmdev.io/vfio"  # the table has 0x030 class prefixes only
    assert handoff.kind_for("0x8086", "0x030000") == "intel.com/gpu"
    assert handoff.kind_for("0x15b3", "0x020000") == "nvidia.com/nic"
    assert handoff.kind_for("0x10de", "0x068000") == "vmdev.io/vfio"
    assert handoff.kind_for("", "") == "vmdev.io/vfio"  # runtime-rs would panic on a short key
    assert handoff.annotation_suffix("/dev/vfio/17") == "vfio17"
    assert handoff.annotation_suffix("/dev/vfio/devices/vfio3") == "vfio3"


def test_indexes_count_per_kind_in_guest_pci_path_order() -> None:
    passed = [handoff.Passed(container_path=f"/dev/vfio/{n}", kind=k, bdfs=(), pci_paths=p, ids=())
              for n, k, p in [(1, "nvidia.com/gpu", ("03/00",)), (2, "nvidia.com/gpu", ("01/00",)),
                              (3, "nvidia.com/nic", ("02/00",)), (4, "nvidia.com/gpu", ("0a/00",)),
                              (5, "nvidia.com/gpu", None)]]
    assert handoff.guest_names(passed) == {
        "/dev/vfio/2": ("nvidia.com/gpu", 0), "/dev/vfio/1": ("nvidia.com/gpu", 1), "/dev/vfio/4": ("nvidia.com/gpu", 2),
        "/dev/vfio/5": ("nvidia.com/gpu", 3), "/dev/vfio/3": ("nvidia.com/nic", 0)}


def test_hot_plugged_groups_get_the_path_of_their_port(run: Any, l1: FakeHost, cdi_dir: Path) -> None:
    (cdi_dir / "pgpu.yaml").write_text(VFIO_SPEC)
    result = run({"annotations": {P + "n": "nvidia.com/pgpu=0"}}, "vmdev-vfio", host_=l1, hot_plug_vfio="root-port",
                 hotplug=True)
    assert result.devices[0].hotplug
    assert result.extras["cdi"]["guest"]["pci_paths"] == {"/dev/vfio/8": ["01/00"]}


def test_other_hypervisors_get_names_but_no_pci_paths(vmdev_plugins: Any, l1: FakeHost, cdi_dir: Path) -> None:
    (cdi_dir / "pgpu.yaml").write_text(VFIO_SPEC)
    pm = vmdev_plugins("vmdev-cdi", "vmdev-vfio")
    settings = SandboxSettings(hypervisor="cloud-hypervisor", options={"cdi_spec_dirs": [str(cdi_dir)]})
    result = plan(parse_spec({"annotations": {P + "n": "nvidia.com/pgpu=0"}}), settings, host=l1.context(), plugins=pm)
    guest = result.extras["cdi"]["guest"]
    assert guest["pci_paths"] == {"/dev/vfio/8": None}
    assert guest["specs"][0]["spec"]["devices"][0]["containerEdits"] == {"env": ["VMDEV_VFIO8_HOST_BDF=0000:02:00.0"]}


# --- a block device named by a CDI spec ---------------------------------------------------------
def test_a_block_node_named_by_cdi_becomes_a_disk(run: Any, fake_host: FakeHost, cdi_dir: Path, tmp_path: Path) -> None:
    testing = plugin_testing("block")
    backing = tmp_path / "disk.img"
    backing.write_bytes(b"\0" * 1024 * 1024)
    testing.loop_device(fake_host, 7, 7, backing)
    fake_host.fake_stat(str(fake_host.dev / "loop7"), mode=testing.BLOCK_NODE_MODE, rdev=(7, 7))
    (cdi_dir / "disk.json").write_text(json.dumps({
        "cdiVersion": "0.5.0", "kind": "storage.example/disk",
        "devices": [{"name": "scratch", "containerEdits": {"deviceNodes": [{"path": "/dev/xvdb", "hostPath": "/dev/loop7"}]}}]}))
    result = run({"annotations": {P + "disk": "storage.example/disk=scratch"}}, "vmdev-block", host_=fake_host)
    (disk,) = result.devices
    assert (disk.container_path, disk.host_path, disk.kind, disk.plugin) == ("/dev/xvdb", "/dev/loop7", "block", "block")
    argv = result.qemu.argv
    assert any(a.startswith("driver=raw,") and "file.filename=/dev/loop7" in a for a in argv)
    assert any(a.startswith("scsi-hd,") for a in argv)  # Kata's default block_device_driver, virtio-scsi
    assert result.extras["cdi"]["injected"][0]["planned"] == [disk.id]


def test_errors_are_vmdev_errors() -> None:
    assert issubclass(CDIError, VmdevError)
