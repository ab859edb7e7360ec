"""Qualified device names: the Go library's parser_test.go table and every rule of its parser."""

from __future__ import annotations

import pytest

from vmdev_cdi import (
    CDIError,
    is_qualified_name,
    parse_device,
    parse_qualified_name,
    parse_qualifier,
    qualified_name,
    validate_class_name,
    validate_device_name,
    validate_vendor_name,
)

# parser_test.go TestQualifiedName: (device, vendor, class, name) of qualified names ...
QUALIFIED = [
    ("vendor.com/class=dev", "vendor.com", "class", "dev"),
    ("a/b=c", "a", "b", "c"),
    ("aa/b=cc", "aa", "b", "cc"),
    ("a/bb=cc", "a", "bb", "cc"),
    ("vendor.com/class=0", "vendor.com", "class", "0"),
    ("vendor1.com/class1=dev1", "vendor1.com", "class1", "dev1"),
    ("vendor1.com/class.subclass=dev1", "vendor1.com", "class.subclass", "dev1"),
    ("other-vendor1.com/class_1=dev_1", "other-vendor1.com", "class_1", "dev_1"),
    ("yet_another-vendor2.com/c-lass_2=dev_1:2.3", "yet_another-vendor2.com", "c-lass_2", "dev_1:2.3"),
]
# ... and of names that parse but do not validate
PARSABLE = [
    ("_invalid.com/class=dev", "_invalid.com", "class", "dev"),
    ("invalid2.com-/class=dev", "invalid2.com-", "class", "dev"),
    ("invalid3.com/_class=dev", "invalid3.com", "_class", "dev"),
    ("invalid4.com/class_=dev", "invalid4.com", "class_", "dev"),
    ("invalid5.com/class=-dev", "invalid5.com", "class", "-dev"),
    ("invalid6.com/class=dev:", "invalid6.com", "class", "dev:"),
    ("*.com/*dev=*gpu*", "*.com", "*dev", "*gpu*"),
]


@pytest.mark.parametrize(("device", "vendor", "class_", "name"), QUALIFIED)
def test_qualified_names_parse_validate_and_rebuild(device: str, vendor: str, class_: str, name: str) -> None:
    assert is_qualified_name(device)
    assert parse_qualified_name(device) == (vendor, class_, name)
    assert parse_device(device) == (vendor, class_, name)
    assert qualified_name(vendor, class_, name) == device


@pytest.mark.parametrize(("device", "vendor", "class_", "name"), PARSABLE)
def test_parsable_but_invalid_names_split_yet_are_not_qualified(
    device: str, vendor: str, class_: str, name: str
) -> None:
    assert not is_qualified_name(device)
    assert parse_device(device) == (vendor, class_, name)


@pytest.mark.parametrize(
    "device",
    ["", "/dev/null", "vendor.com/class", "vendor.com/class=", "=dev", "vendor.com=dev", "vendor.com/=dev", "/=x"],
)
def test_every_structural_failure_says_missing_vendor(device: str) -> None:
    assert parse_device(device) == ("", "", device)
    with pytest.raises(CDIError) as caught:
        parse_qualified_name(device)
    assert caught.value.message == f'unqualified device "{device}", missing vendor'


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("_invalid.com/class=dev", 'invalid device "_invalid.com/class=dev": invalid vendor. "_invalid.com", should start with letter'),
        ("invalid2.com-/class=dev", 'invalid device "invalid2.com-/class=dev": invalid vendor. "invalid2.com-", should end with a letter or digit'),
        ("invalid3.com/_class=dev", 'invalid device "invalid3.com/_class=dev": invalid class. "_class", should start with letter'),
        ("invalid4.com/class_=dev", 'invalid device "invalid4.com/class_=dev": invalid class. "class_", should end with a letter or digit'),
        ("invalid5.com/class=-dev", 'invalid device "invalid5.com/class=-dev": invalid class "-dev", should start with a letter or digit'),
        ("invalid6.com/class=dev:", 'invalid device "invalid6.com/class=dev:": invalid name "dev:", should end with a letter or digit'),
        ("*.com/*dev=*gpu*", 'invalid device "*.com/*dev=*gpu*": invalid vendor. "*.com", should start with letter'),
        ("a/b/c=d", 'invalid device "a/b/c=d": invalid class. invalid character \'/\' in name "b/c"'),
        ("v.com/c=a=b", 'invalid device "v.com/c=a=b": invalid character \'=\' in device name "a=b"'),
        ("v:x.com/c=d", 'invalid device "v:x.com/c=d": invalid vendor. invalid character \':\' in name "v:x.com"'),
        ("ven dor/c=d", 'invalid device "ven dor/c=d": invalid vendor. invalid character \' \' in name "ven dor"'),
        ("v/1c=d", 'invalid device "v/1c=d": invalid class. "1c", should start with letter'),
        ("ab+_/c=d", 'invalid device "ab+_/c=d": invalid vendor. invalid character \'+\' in name "ab+_"'),
    ],
)
def test_validation_failures_have_the_reference_text(device: str, message: str) -> None:
    with pytest.raises(CDIError) as caught:
        parse_qualified_name(device)
    assert caught.value.message == message


def test_ascii_letters_digits_and_case_are_allowed_everywhere_and_there_is_no_length_limit() -> None:
    long = "V" + "e" * 300 + "9"
    assert parse_qualified_name(f"{long}/{long}={long}") == (long, long, long)
    assert is_qualified_name("NVIDIA.COM/GPU=GPU-0:1_2.3")
    assert is_qualified_name("x/y=0")  # a device name may start with a digit, a vendor may not
    assert not is_qualified_name("0x/y=z")


def test_first_and_last_are_checked_as_bytes_and_the_middle_as_characters() -> None:
    with pytest.raises(CDIError) as caught:
        validate_vendor_name("éa")
    assert caught.value.message == 'invalid vendor. "éa", should start with letter'
    with pytest.raises(CDIError) as caught:
        validate_class_name("aéb")
    assert caught.value.message == "invalid class. invalid character 'é' in name \"aéb\""
    # a multi-byte last character leaves half a UTF-8 sequence in the middle: U+FFFD
    with pytest.raises(CDIError) as caught:
        validate_device_name("abé")
    assert caught.value.message == "invalid character '\ufffd' in device name \"abé\""


def test_single_characters_are_valid() -> None:
    validate_vendor_name("a")
    validate_class_name("Z")
    validate_device_name("0")


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (validate_vendor_name, "", "invalid vendor. empty name"),
        (validate_class_name, "", "invalid class. empty name"),
        (validate_device_name, "", "invalid (empty) device name"),
        (validate_device_name, "a dev ice", "invalid character ' ' in device name \"a dev ice\""),
        (validate_device_name, "-", 'invalid class "-", should start with a letter or digit'),
        (validate_vendor_name, 'a"b\nc', 'invalid vendor. invalid character \'"\' in name "a\\"b\\nc"'),
    ],
)
def test_each_part_has_its_own_messages(check, value: str, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CDIError) as caught:
        check(value)
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("kind", "split"),
    [("vendor.com/device", ("vendor.com", "device")), ("a/b/c", ("a", "b/c")), ("vendor.comdevice", ("", "vendor.comdevice")),
     ("/x", ("", "/x")), ("x/", ("", "x/"))],
)
def test_a_qualifier_splits_at_the_first_slash(kind: str, split: tuple[str, str]) -> None:
    assert parse_qualifier(kind) == split


def test_errors_print_on_one_line_but_keep_the_go_text() -> None:
    with pytest.raises(CDIError) as caught:
        parse_qualified_name("a\nb")
    assert caught.value.message == 'unqualified device "a\\nb", missing vendor'
    assert "\n" not in str(caught.value)
