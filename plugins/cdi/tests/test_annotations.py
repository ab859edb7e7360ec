"""cdi.k8s.io/ annotations: annotations_test.go's tables plus the exact texts of every rule."""

from __future__ import annotations

import pytest

from vmdev_cdi import (
    ANNOTATION_PREFIX,
    CDIError,
    annotation_key,
    annotation_value,
    parse_annotations,
    update_annotations,
)

P = ANNOTATION_PREFIX


@pytest.mark.parametrize(
    ("plugin", "dev_id", "key"),
    [
        ("vendor.class", "device", P + "vendor.class_device"),
        ("v-e.n_d.or.cl-as_s", "d_e-v-i-c_e", P + "v-e.n_d.or.cl-as_s_d_e-v-i-c_e"),
        ("v-e.n_d.or.cl-as_s", "d-e/v/i/c-e", P + "v-e.n_d.or.cl-as_s_d-e_v_i_c-e"),
    ],
)
def test_valid_annotation_keys(plugin: str, dev_id: str, key: str) -> None:
    assert annotation_key(plugin, dev_id) == key


@pytest.mark.parametrize(
    ("plugin", "dev_id", "message"),
    [
        ("", "device", "invalid plugin name, empty"),
        ("plugin", "", "invalid deviceID, empty"),
        ("_vendor.class", "device", "invalid name \"_vendor.class_device\", first '_' should be alphanumeric"),
        ("vendor.class", "device_", "invalid name \"vendor.class_device_\", last '_' should be alphanumeric"),
        ("ven.dor-cl+ass", "device", "invalid name \"ven.dor-cl+ass_device\", invalid character '+'"),
        ("vendor.class", "dev+ice", "invalid name \"vendor.class_dev+ice\", invalid character '+'"),
        ("123456789012345678901234567890123456789012345678901234567", "device",
         'invalid plugin+deviceID "123456789012345678901234567890123456789012345678901234567_device", too long'),
    ],
)
def test_invalid_annotation_keys(plugin: str, dev_id: str, message: str) -> None:
    with pytest.raises(CDIError) as caught:
        annotation_key(plugin, dev_id)
    assert caught.value.message == message


def test_the_key_name_may_be_63_bytes_and_not_64() -> None:
    assert annotation_key("p" * 61, "d") == P + "p" * 61 + "_d"
    with pytest.raises(CDIError, match="too long"):
        annotation_key("p" * 62, "d")
    with pytest.raises(CDIError, match="too long"):  # bytes, not characters
        annotation_key("p" * 30 + "é" * 16, "d")


def test_a_non_ascii_first_byte_is_printed_as_go_prints_rune_of_a_byte() -> None:
    with pytest.raises(CDIError) as caught:
        annotation_key("évendor", "d")
    assert caught.value.message == "invalid name \"évendor_d\", first 'Ã' should be alphanumeric"


@pytest.mark.parametrize(
    ("injections", "expected", "parsed"),
    [
        ([("vendor.class", "device", ["vendor.com/class=device"])],
         {P + "vendor.class_device": "vendor.com/class=device"}, ["vendor.com/class=device"]),
        ([("vendor.class", "device", ["vendor.com/class=device1", "vendor.com/class=device2", "vendor.com/class=device3"])],
         {P + "vendor.class_device": "vendor.com/class=device1,vendor.com/class=device2,vendor.com/class=device3"},
         ["vendor.com/class=device1", "vendor.com/class=device2", "vendor.com/class=device3"]),
        ([("vendor1.class", "device1", ["vendor1.com/class=device1"]),
          ("vendor1.class", "device2", ["vendor2.com/class=device1", "vendor2.com/class=device2"]),
          ("vendor3.class2", "device", ["vendor3.com/class2=device1", "vendor3.com/class2=device2", "vendor3.com/class2=device3"])],
         {P + "vendor1.class_device1": "vendor1.com/class=device1",
          P + "vendor1.class_device2": "vendor2.com/class=device1,vendor2.com/class=device2",
          P + "vendor3.class2_device": "vendor3.com/class2=device1,vendor3.com/class2=device2,vendor3.com/class2=device3"},
         ["vendor1.com/class=device1", "vendor2.com/class=device1", "vendor2.com/class=device2",
          "vendor3.com/class2=device1", "vendor3.com/class2=device2", "vendor3.com/class2=device3"]),
    ],
)
def test_update_annotations_then_parse_them_back(injections, expected, parsed) -> None:  # type: ignore[no-untyped-def]
    annotations = None
    for plugin, dev_id, devices in injections:
        annotations = update_annotations(annotations, plugin, dev_id, devices)
    assert annotations == expected
    _, devices = parse_annotations(annotations)
    assert sorted(devices) == sorted(parsed)


@pytest.mark.parametrize(
    ("existing", "plugin", "devices", "message"),
    [
        (None, "", ["vendor3.com/class2=device1"], "CDI annotation failed: invalid plugin name, empty"),
        (None, "vendor2.class", ["vendor2.com/class=device1", "vendor2.com/device2"],
         'CDI annotation failed: unqualified device "vendor2.com/device2", missing vendor'),
        (None, "vendor3.class2", ["vendor3.com/class2=device1", "/dev/null"],
         'CDI annotation failed: unqualified device "/dev/null", missing vendor'),
        ({P + "vendor3.class2_device": "vendor3.com/class2=device0"}, "vendor3.class2", ["vendor3.com/class2=device1"],
         'CDI annotation failed, key "cdi.k8s.io/vendor3.class2_device" used'),
    ],
)
def test_update_annotations_refuses_and_changes_nothing(existing, plugin, devices, message) -> None:  # type: ignore[no-untyped-def]
    before = dict(existing) if existing else None
    with pytest.raises(CDIError) as caught:
        update_annotations(existing, plugin, "device", devices)
    assert caught.value.message == message
    assert existing == before


def test_update_annotations_edits_the_map_in_place() -> None:
    annotations = {"other": "x"}
    assert update_annotations(annotations, "p", "d", ["a.com/b=c"]) is annotations
    assert annotations == {"other": "x", P + "p_d": "a.com/b=c"}


@pytest.mark.parametrize(
    ("annotations", "devices"),
    [
        ({P + "vendor.class_device": "vendor.com/class=device1"}, ["vendor.com/class=device1"]),
        ({P + "vendor1.class_device": "vendor1.com/class=device1",
          P + "vendor2.class_device": "vendor2.com/class=device1,vendor2.com/class=device2",
          P + "vendor3.class2_device": "vendor3.com/class2=device1,vendor3.com/class2=device2,vendor3.com/class2=device3"},
         ["vendor1.com/class=device1", "vendor2.com/class=device1", "vendor2.com/class=device2",
          "vendor3.com/class2=device1", "vendor3.com/class2=device2", "vendor3.com/class2=device3"]),
        ({}, []),
        (None, []),
        ({"io.kubernetes.cri.sandbox-name": "x", "CDI.K8S.IO/x": "not-a-name"}, []),
    ],
)
def test_parse_annotations(annotations, devices) -> None:  # type: ignore[no-untyped-def]
    _, found = parse_annotations(annotations)
    assert sorted(found) == sorted(devices)


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({P + "vendor1.class1_device": "vendor1.com/class1=device1", P + "vendor3.class_device": "vendor3.com=device3"},
         'invalid CDI device name "vendor3.com=device3"'),
        ({P + "vendor1.class2_device": "vendor1.com/class2=device1", P + "vendor2.class_device": "/dev/null"},
         'invalid CDI device name "/dev/null"'),
        ({P + "devices": "foobar"}, 'invalid CDI device name "foobar"'),
        ({P + "x": ""}, 'invalid CDI device name ""'),
        ({P + "x": "a.com/b=c, a.com/b=d"}, 'invalid CDI device name " a.com/b=d"'),
        ({P + "x": "a.com/b=c,"}, 'invalid CDI device name ""'),
    ],
)
def test_parse_annotations_fails_as_a_whole_on_one_bad_item(annotations, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CDIError) as caught:
        parse_annotations(annotations)
    assert caught.value.message == message


def test_the_rest_of_the_key_is_not_checked_duplicates_are_kept_and_order_within_a_value_holds() -> None:
    keys, devices = parse_annotations({P: "a.com/b=2,a.com/b=1,a.com/b=2", P + "!!": "a.com/b=0"})
    assert keys == [P, P + "!!"]
    assert devices == ["a.com/b=2", "a.com/b=1", "a.com/b=2", "a.com/b=0"]


def test_annotation_value_joins_and_validates() -> None:
    assert annotation_value([]) == ""
    assert annotation_value(["a.com/b=c", "a.com/b=d"]) == "a.com/b=c,a.com/b=d"
    with pytest.raises(CDIError) as caught:
        annotation_value(["a.com/b=c", "a.com/b=-d"])
    assert caught.value.message == 'invalid device "a.com/b=-d": invalid class "-d", should start with a letter or digit'
