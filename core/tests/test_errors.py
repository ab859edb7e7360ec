"""Every error is one printable line, whatever it quotes."""

from __future__ import annotations

import pytest

from vmdev.errors import ConfigError, VmdevError, one_line


@pytest.mark.parametrize(("text", "shown"), [
    ("/dev/a\nb", "/dev/a\\nb"),
    ("tab\there", "tab\\there"),
    ("\x1b[31mred", "\\x1b[31mred"),
    ("line\u2028sep", "line\\u2028sep"),
    ("/dev/\udcff", "/dev/\\udcff"),
    ("plain /dev/sda, ü and 日本", "plain /dev/sda, ü and 日本"),
])
def test_one_line_escapes_only_what_breaks_lines_or_printing(text: str, shown: str) -> None:
    assert one_line(text) == shown


def test_a_forged_log_line_in_a_container_path_stays_on_one_line() -> None:
    error = ConfigError("is requested twice\nvmdev: all good", device="/dev/a\nvmdev: ok", field="path")
    assert str(error) == "/dev/a\\nvmdev: ok: path: is requested twice\\nvmdev: all good"
    assert str(error).encode("utf-8")


def test_the_fields_stay_as_given_for_programs() -> None:
    error = VmdevError("m\n", device="/dev/\udcff", field="f")
    assert (error.message, error.device, error.field) == ("m\n", "/dev/\udcff", "f")


@pytest.mark.parametrize(("path", "problem"), [
    ("/dev/a\x01b", "contains a control character"),
    ("/dev/a\x7f", "contains a control character"),
    ("/dev/a\tb", "contains a control character"),
    ("/dev/\udcff", "contains a lone surrogate"),
    ("/dev/é\x00", "contains a control character"),
])
def test_a_device_path_with_a_control_character_or_lone_surrogate_is_refused(path: str, problem: str) -> None:
    from vmdev.models import DeviceInfo

    with pytest.raises(VmdevError, match=problem) as caught:
        DeviceInfo(container_path=path, dev_type="c", major=1, minor=3)
    assert caught.value.field == "container_path"
    with pytest.raises(VmdevError, match=problem):
        DeviceInfo(container_path="/dev/null", dev_type="c", major=1, minor=3, host_path=path)


@pytest.mark.parametrize("path", ["/dev/null", "/dev/disk/by-id/ü 日本", "/dev/a\x85b", "/dev/\u2028"])
def test_printable_and_other_non_ascii_device_paths_are_kept(path: str) -> None:
    from vmdev.models import DeviceInfo

    assert DeviceInfo(container_path=path, dev_type="c", major=1, minor=3).container_path == path
