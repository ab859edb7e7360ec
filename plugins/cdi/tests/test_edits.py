"""Applying container edits: container-edits_test.go's TestApplyContainerEdits and TestAppend, and
every rule of fillMissingInfo and of the OCI editor, on a fake stat(2)."""

from __future__ import annotations

from typing import Any

import pytest

from vmdev_cdi import (
    CDIError,
    ContainerEdits,
    DeviceNode,
    Hook,
    IntelRdt,
    LinuxNetDevice,
    Mount,
    apply_edits,
    fill_missing_info,
)
from vmdev_cdi.testing import FakeStat

NULL_DEV = {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666}
NULL_RULE = {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
HOOKS = [
    Hook(hook_name="prestart", path="/usr/local/bin/prestart-vendor-hook", args=["--verbose"], env=["VENDOR_ENV1=value1"]),
    Hook(hook_name="createRuntime", path="/usr/local/bin/cr-vendor-hook", args=["--debug"], env=["VENDOR_ENV2=value2"]),
    Hook(hook_name="createContainer", path="/usr/local/bin/cc-vendor-hook", args=["--create"], env=["VENDOR_ENV3=value3"]),
    Hook(hook_name="startContainer", path="/usr/local/bin/sc-vendor-hook", args=["--start"], env=["VENDOR_ENV4=value4"]),
    Hook(hook_name="poststart", path="/usr/local/bin/poststart-vendor-hook", env=["VENDOR_ENV5=value5"]),
    Hook(hook_name="poststop", path="/usr/local/bin/poststop-vendor-hook", timeout=3),
]
USERNS = {"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 999}],
          "namespaces": [{"type": "user", "path": "/foo/bar"}]}

APPLY: list[tuple[str, dict[str, Any], ContainerEdits | None, dict[str, Any]]] = [
    ("empty spec, empty edits", {}, None, {}),
    ("empty spec, env var", {}, ContainerEdits(env=["BAR=BARVALUE1"]), {"process": {"env": ["BAR=BARVALUE1"]}}),
    ("duplicate env vars use last value", {}, ContainerEdits(env=["FOO=old", "FOO=new"]), {"process": {"env": ["FOO=new"]}}),
    ("existing env var is replaced in place", {"process": {"env": ["FOO=old", "BAR=old"]}},
     ContainerEdits(env=["FOO=new"]), {"process": {"env": ["FOO=new", "BAR=old"]}}),
    ("a repeated existing name: the last position wins", {"process": {"env": ["A=1", "A=2", "B=3"]}},
     ContainerEdits(env=["A=9", "C=4"]), {"process": {"env": ["A=1", "A=9", "B=3", "C=4"]}}),
    ("empty spec, device", {}, ContainerEdits(device_nodes=[DeviceNode(path="/dev/null")]),
     {"linux": {"devices": [NULL_DEV], "resources": {"devices": [NULL_RULE]}}}),
    ("device with explicitly empty permissions", {},
     ContainerEdits(device_nodes=[DeviceNode(path="/dev/nil", type="c", major=1, minor=3, permissions="none")]),
     {"linux": {"devices": [{"path": "/dev/nil", "type": "c", "major": 1, "minor": 3}],
                "resources": {"devices": [{"allow": True, "type": "c", "major": 1, "minor": 3}]}}}),
    ("device with omitted permissions", {},
     ContainerEdits(device_nodes=[DeviceNode(path="/dev/nil", type="c", major=1, minor=3)]),
     {"linux": {"devices": [{"path": "/dev/nil", "type": "c", "major": 1, "minor": 3}],
                "resources": {"devices": [{**NULL_RULE}]}}}),
    ("empty spec, device, env var", {},
     ContainerEdits(env=["FOO=BAR"], device_nodes=[DeviceNode(path="/dev/null", type="c")]),
     {"process": {"env": ["FOO=BAR"]}, "linux": {"devices": [NULL_DEV], "resources": {"devices": [NULL_RULE]}}}),
    ("empty spec, mount", {}, ContainerEdits(mounts=[Mount(host_path="/dev/host-vendorctl", container_path="/dev/cntr-vendorctl")]),
     {"mounts": [{"destination": "/dev/cntr-vendorctl", "source": "/dev/host-vendorctl"}]}),
    ("empty spec, hooks", {}, ContainerEdits(hooks=HOOKS), {"hooks": {
        "prestart": [{"path": "/usr/local/bin/prestart-vendor-hook", "args": ["--verbose"], "env": ["VENDOR_ENV1=value1"]}],
        "createRuntime": [{"path": "/usr/local/bin/cr-vendor-hook", "args": ["--debug"], "env": ["VENDOR_ENV2=value2"]}],
        "createContainer": [{"path": "/usr/local/bin/cc-vendor-hook", "args": ["--create"], "env": ["VENDOR_ENV3=value3"]}],
        "startContainer": [{"path": "/usr/local/bin/sc-vendor-hook", "args": ["--start"], "env": ["VENDOR_ENV4=value4"]}],
        "poststart": [{"path": "/usr/local/bin/poststart-vendor-hook", "env": ["VENDOR_ENV5=value5"]}],
        "poststop": [{"path": "/usr/local/bin/poststop-vendor-hook", "timeout": 3}]}}),
    ("hooks are appended after existing ones", {"hooks": {"prestart": [{"path": "/old"}]}},
     ContainerEdits(hooks=[HOOKS[0], HOOKS[0]]), {"hooks": {"prestart": [{"path": "/old"}] + [
         {"path": "/usr/local/bin/prestart-vendor-hook", "args": ["--verbose"], "env": ["VENDOR_ENV1=value1"]}] * 2}}),
    ("empty spec, rdt", {}, ContainerEdits(intel_rdt=IntelRdt(
        clos_id="clos-1", l3_cache_schema="L3:0=ff;1=ff", mem_bw_schema="MB:0=50;1=50", schemata=["L2:0=ffff"],
        enable_monitoring=True)),
     {"linux": {"intelRdt": {"closID": "clos-1", "l3CacheSchema": "L3:0=ff;1=ff", "memBwSchema": "MB:0=50;1=50",
                             "schemata": ["L2:0=ffff"], "enableMonitoring": True}}}),
    ("non-empty spec, overriding rdt", {"linux": {"intelRdt": {"closID": "clos-1", "l3CacheSchema": "L3:0=ff",
                                                               "memBwSchema": "MB:0=100", "schemata": ["L2:0=ffff"],
                                                               "enableMonitoring": True}}},
     ContainerEdits(intel_rdt=IntelRdt(clos_id="clos-2", l3_cache_schema="L3:0=f")),
     {"linux": {"intelRdt": {"closID": "clos-2", "l3CacheSchema": "L3:0=f"}}}),
    ("empty spec, Linux net devices", {}, ContainerEdits(net_devices=[
        LinuxNetDevice(host_interface_name="eno1", name="netdev0"), LinuxNetDevice(host_interface_name="eno2", name="netdev1")]),
     {"linux": {"netDevices": {"eno1": {"name": "netdev0"}, "eno2": {"name": "netdev1"}}}}),
    ("non-empty spec, overriding Linux net devices", {"linux": {"netDevices": {"eno1": {"name": "netdev1"}}}},
     ContainerEdits(net_devices=[LinuxNetDevice(host_interface_name="eno1", name="netdev2"),
                                 LinuxNetDevice(host_interface_name="eno2", name="netdev1")]),
     {"linux": {"netDevices": {"eno1": {"name": "netdev2"}, "eno2": {"name": "netdev1"}}}}),
    ("additional GIDs are applied", {}, ContainerEdits(additional_gids=[4, 5, 6]),
     {"process": {"user": {"additionalGids": [4, 5, 6]}}}),
    ("existing additional GIDs are not duplicated", {"process": {"user": {"additionalGids": [4]}}},
     ContainerEdits(additional_gids=[4, 5]), {"process": {"user": {"additionalGids": [4, 5]}}}),
    ("duplicate GIDs are ignored", {}, ContainerEdits(additional_gids=[4, 5, 6, 5, 6, 4]),
     {"process": {"user": {"additionalGids": [4, 5, 6]}}}),
    ("additional GID 0 is skipped", {}, ContainerEdits(additional_gids=[0]), {}),
    ("mount edits do not change the order of original mounts",
     {"mounts": [{"source": "/some/host/path1", "destination": "/dest/path/b"},
                 {"source": "/some/host/path2", "destination": "/dest/path/a"}]},
     ContainerEdits(mounts=[Mount(host_path="/some/host/path3", container_path="/dest/edit")]),
     {"mounts": [{"destination": "/dest/edit", "source": "/some/host/path3"},
                 {"source": "/some/host/path1", "destination": "/dest/path/b"},
                 {"source": "/some/host/path2", "destination": "/dest/path/a"}]}),
    ("a mount added by an edit goes after existing ones of the same depth",
     {"mounts": [{"source": "/some/host/path1", "destination": "/dest/path/c"},
                 {"source": "/some/host/path2", "destination": "/dest/path/b"}]},
     ContainerEdits(mounts=[Mount(host_path="/some/host/path3", container_path="/dest/path/a")]),
     {"mounts": [{"source": "/some/host/path1", "destination": "/dest/path/c"},
                 {"source": "/some/host/path2", "destination": "/dest/path/b"},
                 {"destination": "/dest/path/a", "source": "/some/host/path3"}]}),
    ("existing mounts of other depths are reordered, by cleaned depth",
     {"mounts": [{"destination": "/a/b/c"}, {"destination": "//x/"}]},
     ContainerEdits(mounts=[Mount(host_path="/h", container_path="/y")]),
     {"mounts": [{"destination": "//x/"}, {"destination": "/y", "source": "/h"}, {"destination": "/a/b/c"}]}),
    ("a mount replaces the first one with its destination",
     {"mounts": [{"destination": "/d", "source": "/1"}, {"destination": "/d", "source": "/2"}]},
     ContainerEdits(mounts=[Mount(host_path="/3", container_path="/d", options=["ro"], type="bind")]),
     {"mounts": [{"destination": "/d", "source": "/2"}, {"destination": "/d", "type": "bind", "source": "/3", "options": ["ro"]}]}),
    ("mounts in a user namespace get idmap options", {"linux": USERNS,
     "mounts": [{"source": "/some/host/path1", "destination": "/dest/path/c"}]},
     ContainerEdits(mounts=[Mount(host_path="/some/host/path3", container_path="/dest/path/a", type="bind"),
                            Mount(host_path="/some/host/path4", container_path="/dest/path/d", type="bind", options=["rbind"]),
                            Mount(host_path="/p5", container_path="/dest/path/e", options=["bind", "ro"]),
                            Mount(host_path="/p6", container_path="/dest/path/f", type="bind", options=["ridmap"]),
                            Mount(host_path="tmpfs", container_path="/dest/path/g", type="tmpfs")]),
     {"linux": USERNS, "mounts": [
         {"source": "/some/host/path1", "destination": "/dest/path/c"},
         {"destination": "/dest/path/a", "type": "bind", "source": "/some/host/path3", "options": ["idmap"]},
         {"destination": "/dest/path/d", "type": "bind", "source": "/some/host/path4", "options": ["rbind", "ridmap"]},
         {"destination": "/dest/path/e", "source": "/p5", "options": ["bind", "ro", "idmap"]},
         {"destination": "/dest/path/f", "type": "bind", "source": "/p6", "options": ["ridmap"]},
         {"destination": "/dest/path/g", "type": "tmpfs", "source": "tmpfs"}]}),
]


@pytest.mark.parametrize(("oci", "edits", "result"), [(o, e, r) for _, o, e, r in APPLY], ids=[d for d, *_ in APPLY])
def test_apply_container_edits(fake_stat: FakeStat, oci: dict[str, Any], edits: ContainerEdits | None,
                               result: dict[str, Any]) -> None:
    import copy

    spec = copy.deepcopy(oci)
    apply_edits(spec, edits, stat=fake_stat)
    assert spec == result


def test_a_nil_oci_spec_cannot_be_edited() -> None:
    with pytest.raises(CDIError) as caught:
        apply_edits(None, ContainerEdits())
    assert caught.value.message == "can't edit nil OCI Spec"


def test_sections_are_applied_in_the_reference_order(fake_stat: FakeStat) -> None:
    spec: dict[str, Any] = {}
    fake_stat.add("/dev/fifo", "p", mode=0o600)
    edits = ContainerEdits(
        additional_gids=[7], intel_rdt=IntelRdt(clos_id="c"), hooks=[HOOKS[5]],
        mounts=[Mount(host_path="/h", container_path="/m")], net_devices=[LinuxNetDevice(host_interface_name="e", name="n")],
        device_nodes=[DeviceNode(path="/dev/fifo")], env=["E=1"],
    )
    apply_edits(spec, edits, stat=fake_stat)
    assert list(spec) == ["process", "linux", "mounts", "hooks"]
    assert list(spec["linux"]) == ["devices", "netDevices", "intelRdt"]  # a FIFO gets no cgroup rule
    assert list(spec["process"]) == ["env", "user"]
    assert spec["linux"]["devices"] == [{"path": "/dev/fifo", "type": "p", "major": 0, "minor": 0, "fileMode": 0o600}]


def test_an_existing_device_with_the_same_path_moves_to_the_end_and_rules_are_only_appended(fake_stat: FakeStat) -> None:
    spec: dict[str, Any] = {"linux": {"devices": [{"path": "/dev/null"}, {"path": "/dev/zero"}],
                                      "resources": {"devices": [{"allow": False, "access": "rwm"}]}}}
    apply_edits(spec, ContainerEdits(device_nodes=[DeviceNode(path="/dev/null"), DeviceNode(path="/dev/null")]), stat=fake_stat)
    assert spec["linux"]["devices"] == [{"path": "/dev/zero"}, NULL_DEV]
    assert spec["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}, NULL_RULE, NULL_RULE]


def test_process_uid_and_gid_fill_unset_node_ids_when_positive(fake_stat: FakeStat) -> None:
    spec: dict[str, Any] = {"process": {"user": {"uid": 1000, "gid": 0}}}
    apply_edits(spec, ContainerEdits(device_nodes=[DeviceNode(path="/dev/null"), DeviceNode(path="/dev/zero", uid=5, gid=6)]),
                stat=fake_stat)
    assert spec["linux"]["devices"][0] == {**NULL_DEV, "uid": 1000}
    assert spec["linux"]["devices"][1] == {"path": "/dev/zero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o666,
                                           "uid": 5, "gid": 6}


@pytest.mark.parametrize(("permissions", "access"), [("", "rwm"), ("r", "r"), ("mw", "mw"), ("none", None)])
def test_cgroup_access_comes_from_the_permissions(fake_stat: FakeStat, permissions: str, access: str | None) -> None:
    spec: dict[str, Any] = {}
    apply_edits(spec, ContainerEdits(device_nodes=[DeviceNode(path="/dev/null", permissions=permissions)]), stat=fake_stat)
    (rule,) = spec["linux"]["resources"]["devices"]
    assert rule.get("access") == access


def test_u_and_p_devices_get_no_cgroup_rule(fake_stat: FakeStat) -> None:
    spec: dict[str, Any] = {}
    apply_edits(spec, ContainerEdits(device_nodes=[DeviceNode(path="/dev/u", type="u", major=4, minor=1),
                                                   DeviceNode(path="/dev/p", type="p")]), stat=fake_stat)
    assert [d["type"] for d in spec["linux"]["devices"]] == ["u", "p"]
    assert "resources" not in spec["linux"]


# --- fillMissingInfo ----------------------------------------------------------------------------
def test_fill_takes_type_major_minor_and_mode_from_the_host_path(fake_stat: FakeStat) -> None:
    fake_stat.add("/host/dev/nvidia0", "c", 195, 0, 0o660)
    node = fill_missing_info(DeviceNode(path="/dev/nvidia0", host_path="/host/dev/nvidia0"), fake_stat)
    assert node == DeviceNode(path="/dev/nvidia0", host_path="/host/dev/nvidia0", type="c", major=195, minor=0, file_mode=0o660)
    assert fake_stat.calls == ["/host/dev/nvidia0"]


def test_fill_uses_the_container_path_when_there_is_no_host_path(fake_stat: FakeStat) -> None:
    assert fill_missing_info(DeviceNode(path="/dev/null"), fake_stat).host_path == "/dev/null"


def test_a_minimal_node_keeps_what_it_says_but_gets_the_file_mode(fake_stat: FakeStat) -> None:
    node = fill_missing_info(DeviceNode(path="/dev/null", type="b", major=9, minor=9), fake_stat)
    assert (node.type, node.major, node.minor, node.file_mode) == ("b", 9, 9, 0o666)
    node = fill_missing_info(DeviceNode(path="/dev/null", type="c", major=1, minor=3, file_mode=0o600), fake_stat)
    assert node.file_mode == 0o600


def test_a_minimal_node_need_not_exist_on_the_host(fake_stat: FakeStat) -> None:
    node = DeviceNode(path="/dev/vendor1-dev1", type="b", major=10, minor=1)
    assert fill_missing_info(node, fake_stat) == DeviceNode(path="/dev/vendor1-dev1", host_path="/dev/vendor1-dev1",
                                                            type="b", major=10, minor=1)
    assert fill_missing_info(DeviceNode(path="/dev/fifo", type="p"), fake_stat).file_mode is None


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (DeviceNode(path="/dev/missing"), 'failed to stat CDI host device "/dev/missing": no such file or directory'),
        (DeviceNode(path="/dev/x", host_path="/srv/file"), 'failed to stat CDI host device "/srv/file": not a device node'),
        (DeviceNode(path="/dev/x", host_path="/srv/link"), 'failed to stat CDI host device "/srv/link": not a device node'),
        (DeviceNode(path="/dev/x", type="c", host_path="/srv/missing"),
         'failed to stat CDI host device "/srv/missing": no such file or directory'),
        (DeviceNode(path="/dev/null", type="b"), 'CDI device ("/dev/null", "/dev/null"), host type mismatch (b, c)'),
        (DeviceNode(path="/dev/null", type="u"), 'CDI device ("/dev/null", "/dev/null"), host type mismatch (u, c)'),
    ],
)
def test_fill_errors(fake_stat: FakeStat, node: DeviceNode, message: str) -> None:
    fake_stat.add("/srv/file", "f")
    fake_stat.add("/srv/link", "l")  # lstat: a symlink is not followed
    with pytest.raises(CDIError) as caught:
        fill_missing_info(node, fake_stat)
    assert caught.value.message == message


def test_a_zero_major_takes_major_and_minor_from_the_host_even_over_a_written_minor(fake_stat: FakeStat) -> None:
    node = fill_missing_info(DeviceNode(path="/dev/null", type="c", minor=77), fake_stat)
    assert (node.major, node.minor) == (1, 3)


def test_a_node_without_type_but_with_a_major_gets_the_host_type_and_keeps_its_numbers(fake_stat: FakeStat) -> None:
    node = fill_missing_info(DeviceNode(path="/dev/null", major=7, minor=9), fake_stat)
    assert (node.type, node.major, node.minor, node.file_mode) == ("c", 7, 9, 0o666)


def test_a_fifo_keeps_its_numbers(fake_stat: FakeStat) -> None:
    fake_stat.add("/dev/f", "p", 0, 0, 0o644)
    assert fill_missing_info(DeviceNode(path="/dev/f", minor=4), fake_stat) == DeviceNode(
        path="/dev/f", host_path="/dev/f", type="p", minor=4, file_mode=0o644)


def test_mode_bits_beyond_the_permissions_are_kept(fake_stat: FakeStat) -> None:
    fake_stat.add("/dev/s", "c", 5, 5, 0o4755)
    assert fill_missing_info(DeviceNode(path="/dev/s"), fake_stat).file_mode == 0o4755


def test_a_failed_node_leaves_the_sections_before_it_applied(fake_stat: FakeStat) -> None:
    spec: dict[str, Any] = {}
    with pytest.raises(CDIError):
        apply_edits(spec, ContainerEdits(env=["A=1"], device_nodes=[DeviceNode(path="/dev/null"), DeviceNode(path="/dev/nope")]),
                    stat=fake_stat)
    assert spec["process"]["env"] == ["A=1"] and spec["linux"]["devices"] == [NULL_DEV]


def test_the_default_stat_is_lstat_on_the_real_host(tmp_path: Any) -> None:
    import os

    os.symlink("/dev/null", tmp_path / "null-link")
    with pytest.raises(CDIError, match="not a device node"):
        fill_missing_info(DeviceNode(path="/dev/x", host_path=str(tmp_path / "null-link")))
    assert fill_missing_info(DeviceNode(path="/dev/null")).type == "c"


# --- TestAppend -----------------------------------------------------------------------------
def test_append_merges_lists_and_a_later_rdt_replaces() -> None:
    dst = ContainerEdits(env=["var0=val0"])
    for src in (
        ContainerEdits(env=["var1=val1"], device_nodes=[DeviceNode(path="/dev/dev1")],
                       intel_rdt=IntelRdt(clos_id="clos-1", l3_cache_schema="L3:0=ff", schemata=["L2: 0xFFFF"])),
        ContainerEdits(env=["var2=val2", "var3=val3"], device_nodes=[DeviceNode(path="/dev/dev2"), DeviceNode(path="/dev/dev3")]),
        ContainerEdits(env=["var4=val4"], device_nodes=[DeviceNode(path="/dev/dev4")], intel_rdt=IntelRdt(clos_id="clos-2")),
    ):
        dst = dst.append(src)
    assert dst == ContainerEdits(
        env=["var0=val0", "var1=val1", "var2=val2", "var3=val3", "var4=val4"],
        device_nodes=[DeviceNode(path=f"/dev/dev{i}") for i in range(1, 5)], intel_rdt=IntelRdt(clos_id="clos-2"))


def test_append_does_not_deduplicate_gids_and_none_is_a_no_op() -> None:
    dst = ContainerEdits(additional_gids=[5])
    for src in (ContainerEdits(additional_gids=[0]), None, ContainerEdits(additional_gids=[5]),
                ContainerEdits(additional_gids=[6, 7, 6])):
        dst = dst.append(src)
    assert dst.additional_gids == (5, 0, 5, 6, 7, 6)
    assert ContainerEdits().append(None) == ContainerEdits()
