"""Versions and the minimum-version rule: specs-go/version_test.go and spec_test.go's tables."""

from __future__ import annotations

import pytest

from vmdev_cdi import (
    CURRENT_VERSION,
    CDIError,
    ContainerEdits,
    Device,
    DeviceNode,
    IntelRdt,
    LinuxNetDevice,
    Mount,
    SpecDocument,
    minimum_required_version,
    validate_version,
)

ENV = ContainerEdits(env=["FOO=bar"])


def edits(**fields) -> ContainerEdits:  # type: ignore[no-untyped-def]
    return ContainerEdits(**fields)


MINIMUM = [
    ("no version-specific features", SpecDocument(), "0.3.0"),
    ("mount type", SpecDocument(container_edits=edits(mounts=[Mount(type="bind")])), "0.4.0"),
    ("device node host path", SpecDocument(container_edits=edits(device_nodes=[DeviceNode(host_path="/dev/example")])), "0.5.0"),
    ("host path equal to path", SpecDocument(container_edits=edits(device_nodes=[DeviceNode(host_path="/p", path="/p")])), "0.5.0"),
    ("numeric device name", SpecDocument(devices=[Device(name="0example")]), "0.5.0"),
    ("device name 0", SpecDocument(devices=[Device(name="0", container_edits=ENV)]), "0.5.0"),
    ("letter device name", SpecDocument(devices=[Device(name="device0", container_edits=ENV)]), "0.3.0"),
    ("spec annotation", SpecDocument(annotations={"example.com/key": "value"}), "0.6.0"),
    ("device annotation", SpecDocument(devices=[Device(name="d", annotations={"key": "value"}, container_edits=ENV)]), "0.6.0"),
    ("dot in class", SpecDocument(kind="example.com/example.class"), "0.6.0"),
    ("dot in vendor only", SpecDocument(kind="example.com/class"), "0.3.0"),
    ("additional GIDs", SpecDocument(container_edits=edits(additional_gids=[1])), "0.7.0"),
    ("device additional GIDs", SpecDocument(devices=[Device(container_edits=edits(additional_gids=[5]))]), "0.7.0"),
    ("empty Intel RDT", SpecDocument(container_edits=edits(intel_rdt=IntelRdt())), "0.7.0"),
    ("Intel RDT closID", SpecDocument(container_edits=edits(intel_rdt=IntelRdt(clos_id="foo"))), "0.7.0"),
    ("device Intel RDT", SpecDocument(devices=[Device(name="d", container_edits=edits(intel_rdt=IntelRdt(clos_id="foo")))]), "0.7.0"),
    ("Intel RDT schemata", SpecDocument(container_edits=edits(intel_rdt=IntelRdt(schemata=["L3:0=ff"]))), "1.1.0"),
    ("empty Intel RDT schemata", SpecDocument(container_edits=edits(intel_rdt=IntelRdt(schemata=[]))), "1.1.0"),
    ("Intel RDT monitoring", SpecDocument(container_edits=edits(intel_rdt=IntelRdt(enable_monitoring=True))), "1.1.0"),
    ("device RDT schemata", SpecDocument(devices=[Device(name="d", container_edits=edits(intel_rdt=IntelRdt(schemata=["foo"])))]), "1.1.0"),
    ("device RDT monitoring", SpecDocument(devices=[Device(name="d", container_edits=edits(intel_rdt=IntelRdt(enable_monitoring=True)))]), "1.1.0"),
    ("network device", SpecDocument(container_edits=edits(net_devices=[LinuxNetDevice()])), "1.1.0"),
    ("device network device", SpecDocument(devices=[Device(container_edits=edits(net_devices=[LinuxNetDevice()]))]), "1.1.0"),
    ("newest feature wins", SpecDocument(annotations={"k": "v"}, container_edits=edits(
        additional_gids=[1], net_devices=[LinuxNetDevice()])), "1.1.0"),
    ("newest of 0.4/0.5/0.6", SpecDocument(annotations={"key": "value"}, container_edits=edits(
        device_nodes=[DeviceNode(host_path="/h")], mounts=[Mount(type="bind")])), "0.6.0"),
]


@pytest.mark.parametrize(("spec", "want"), [(s, w) for _, s, w in MINIMUM], ids=[d for d, _, _ in MINIMUM])
def test_minimum_required_version(spec: SpecDocument, want: str) -> None:
    assert minimum_required_version(spec) == want


VALIDATE = [
    ("current version", "1.1.0", SpecDocument(), ""),
    ("optional v prefix", "v1.1.0", SpecDocument(), ""),
    ("earliest supported version", "0.3.0", SpecDocument(), ""),
    ("known but unsupported v0.1.0", "0.1.0", SpecDocument(), "the spec version must be at least v0.3.0"),
    ("known but unsupported v0.2.0", "v0.2.0", SpecDocument(), "the spec version must be at least v0.3.0"),
    ("unknown version", "1.2.0", SpecDocument(), 'invalid version "1.2.0"'),
    ("malformed version", "not-a-version", SpecDocument(), 'invalid version "not-a-version"'),
    ("too old for feature", "0.6.0", SpecDocument(container_edits=edits(additional_gids=[1])),
     "the spec version must be at least v0.7.0"),
    ("minimum for feature", "0.7.0", SpecDocument(container_edits=edits(additional_gids=[1])), ""),
    ("newer than the feature needs", "1.1.0", SpecDocument(container_edits=edits(additional_gids=[1])), ""),
    ("spec_test invalid 0.0.0", "0.0.0", SpecDocument(), 'invalid version "0.0.0"'),
    ("empty", "", SpecDocument(), 'invalid version ""'),
    ("two v", "vv1.1.0", SpecDocument(), 'invalid version "vv1.1.0"'),
    ("no patch", "1.1", SpecDocument(), 'invalid version "1.1"'),
    ("v and no patch", "v1.1", SpecDocument(), 'invalid version "v1.1"'),
    ("prerelease", "1.1.0-rc1", SpecDocument(), 'invalid version "1.1.0-rc1"'),
    ("every known version is known", "0.8.0", SpecDocument(), ""),
    ("1.0.0", "v1.0.0", SpecDocument(), ""),
]


@pytest.mark.parametrize(("version", "spec", "error"), [(v, s, e) for _, v, s, e in VALIDATE], ids=[d for d, *_ in VALIDATE])
def test_validate_version(version: str, spec: SpecDocument, error: str) -> None:
    import attrs

    spec = attrs.evolve(spec, cdi_version=version)
    if not error:
        validate_version(spec)
        return
    with pytest.raises(CDIError) as caught:
        validate_version(spec)
    assert caught.value.message == error


def test_current_version_is_valid() -> None:
    validate_version(SpecDocument(cdi_version=CURRENT_VERSION))
