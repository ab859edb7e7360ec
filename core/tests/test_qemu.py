"""QEMU option building: nothing a caller passes can add an option."""

from __future__ import annotations

import pytest

from vmdev.errors import InvalidIdError
from vmdev.qemu import QmpCommand, check_id, escape, keyvals, make_id, opts, split_opts

#: values with what QEMU's option parser must be given for them (qemu-option.c, get_opt_value: a
#: doubled comma is a comma of the value, a single one ends it; "=" only splits a key from its value)
TRICKY = [
    ("/img/disk,readonly", "/img/disk,,readonly"),
    ("/img/a,b.img", "/img/a,,b.img"),
    ("/img/x,,y", "/img/x,,,,y"),
    ("/img/k=v,id=evil", "/img/k=v,,id=evil"),
    ("/img/with space", "/img/with space"),
    (",", ",,"),
    ("=", "="),
    ("", ""),
    ("/dev/urandom,filename=/etc/shadow", "/dev/urandom,,filename=/etc/shadow"),
]


@pytest.mark.parametrize(("value", "written"), TRICKY)
def test_a_value_is_written_as_qemu_reads_it_and_splits_back_whole(value: str, written: str) -> None:
    rendered = opts("virtio-blk-pci", {"drive": "d1", "serial": value, "id": "x"})
    assert rendered == f"virtio-blk-pci,drive=d1,serial={written},id=x"
    assert split_opts(rendered) == ["virtio-blk-pci", "drive=d1", f"serial={value}", "id=x"]


def test_escape_doubles_commas_and_refuses_control_characters() -> None:
    assert escape("a,b,,c") == "a,,b,,,,c"
    with pytest.raises(ValueError, match="control character"):
        escape("a\nb")


def test_opts_renders_types_and_skips_none() -> None:
    assert opts("x", {"a": True, "b": False, "c": 3, "d": None, "e": "s"}) == "x,a=on,b=off,c=3,e=s"
    assert keyvals({"slots": 2, "maxmem": "4G", "none": None}) == "slots=2,maxmem=4G"


@pytest.mark.parametrize("bad", ["virtio,x=1", "a b", "", "-x"])
def test_heads_and_keys_must_be_plain_names(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid QEMU option"):
        opts(bad)
    with pytest.raises(ValueError, match="invalid QEMU option key"):
        opts("ok", {bad: 1})


@pytest.mark.parametrize("good", ["rng0", "drive-0123456789abcdef", "a.b_c-d", "Z"])
def test_valid_ids(good: str) -> None:
    assert check_id(good) == good


@pytest.mark.parametrize("bad", ["", "0abc", "-a", "a,b", "a b", "a=b", "é", "x" * 128])
def test_invalid_ids_name_device_and_field(bad: str) -> None:
    with pytest.raises(InvalidIdError) as exc:
        check_id(bad, device="/dev/x", field="id")
    assert str(exc.value).startswith("/dev/x: id: ")


def test_make_id_is_stable_distinct_and_valid() -> None:
    a, b = make_id("drive", "/dev/loop0|7:0"), make_id("drive", "/dev/loop1|7:1")
    assert a == make_id("drive", "/dev/loop0|7:0")
    assert a != b
    assert a.startswith("drive-") and len(a) == len("drive-") + 16
    assert len(make_id("drive", "k")) <= 31  # Kata's maxDevIDSize


def test_qmp_command_json_omits_empty_arguments() -> None:
    assert QmpCommand("query-status").to_json() == {"execute": "query-status"}
    assert QmpCommand("device_del", {"id": "x"}).to_json() == {"execute": "device_del", "arguments": {"id": "x"}}
