"""Every input surface against every oracle (issue 11): one property per surface.

A case that breaks an oracle fails the property with the case and the violation; violations that
a known bug of another owner explains (:mod:`vmdev_fuzz.known`) are tolerated here and proven
separately, as strict xfails, in ``test_known_bugs.py``.
"""

from __future__ import annotations

from hypothesis import example, given
from vmdev_fuzz import hosts as h
from vmdev_fuzz import strategies
from vmdev_fuzz.cases import PlanCase, RawCase
from vmdev_fuzz.checks import meets_every_oracle
from vmdev_fuzz.runner import Session

#: issue 11's two wrong devices: a made-up 259:99 named /etc/shadow, and /dev/vda asked for as 250:7
#: on a host whose /dev/vda is 254:0 (its root disk)
SHADOW = PlanCase(hypervisor="qemu", document=strategies.oci([{"path": "/etc/shadow", "type": "b", "major": 259,
                                                               "minor": 99}]))
ROOT_DISK = PlanCase(
    hypervisor="qemu",
    host=h.HostSpec(devices=(h.DevEntry(kind="block", major=254, minor=0, devname="vda", node="vda"),)),
    document=strategies.oci([{"path": "/dev/vda", "type": "b", "major": 250, "minor": 7}]),
)


@given(case=strategies.raw_json_case())
@example(case=RawCase(b"[" * 100000 + b"]" * 100000))
@example(case=RawCase(b'{"linux": {"devices": [{"path": "/dev/a", "type": "b", "major": ' + b"9" * 4301
                      + b', "minor": 0}]}}'))
@example(case=RawCase(b'{"linux": {"devices": [{"path": "/dev/\\ud800", "type": "c", "major": 1, "minor": 3}]}}'))
@example(case=RawCase(b'{"mounts": [{"destination": "/x\\ny", "source": "/s", "type": "bind"}]}'))
def test_config_json_bytes_are_read_or_refused_in_one_line(session: Session, case: RawCase) -> None:
    meets_every_oracle(session, "oci-json", case)


@given(case=strategies.oci_devices())
@example(case=SHADOW)
@example(case=ROOT_DISK)
def test_device_requests_never_become_another_device(session: Session, case: PlanCase) -> None:
    meets_every_oracle(session, "oci-devices", case)


@given(case=strategies.mount_case())
def test_mounts_become_disks_of_their_own_source_or_nothing(session: Session, case: PlanCase) -> None:
    meets_every_oracle(session, "mounts", case)


@given(case=strategies.block_sysfs())
def test_loop_devices_with_any_sysfs_attributes_meet_every_oracle(session: Session, case: PlanCase) -> None:
    meets_every_oracle(session, "block-sysfs", case)


@given(case=strategies.vfio_case())
def test_iommu_groups_with_any_pci_attributes_meet_every_oracle(session: Session, case: PlanCase) -> None:
    meets_every_oracle(session, "vfio", case)


@given(case=strategies.store_case())
def test_vhost_user_store_requests_reach_their_own_socket_or_are_refused(session: Session, case: PlanCase) -> None:
    meets_every_oracle(session, "vhost-user-store", case)


@given(case=strategies.settings_case())
@example(case=PlanCase(hypervisor="qemu", options={"entropy_source": "/dev/\ud800x",
                                                   "valid_entropy_sources": ["/dev/\ud800x"]},
                       document=strategies.oci([])))
@example(case=PlanCase(hypervisor="qemu", options={"machine_type": 1.5}, document=strategies.oci([])))
@example(case=PlanCase(hypervisor="qemu", options={"virtio_fs_tag": "tag\ud800", "shared_fs": "virtio-9p"},
                       document=strategies.oci([])))
def test_every_declared_settings_key_takes_any_value_safely(session: Session, case: PlanCase) -> None:
    meets_every_oracle(session, "settings", case)


@given(case=strategies.raw_toml_case())
@example(case=RawCase(b"\xff\xfe[hypervisor.qemu]\n"))
@example(case=RawCase(b"[hypervisor.qemu]\nmemory_slots = 9" + b"9" * 4300 + b"\n"))
def test_configuration_toml_bytes_are_read_or_refused_in_one_line(session: Session, case: RawCase) -> None:
    meets_every_oracle(session, "settings-toml", case)
