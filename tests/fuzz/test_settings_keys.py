"""Every settings key of every installed plugin, swept with wrong types and edge values on every
backend it applies to (hot and cold): each value is taken or refused in one line, and the plan
meets every oracle. The keys are enumerated from ``PluginManager.declared_settings()``, so a key a
plugin adds tomorrow is swept tomorrow."""

from __future__ import annotations

import datetime
import math
from typing import Any

import pytest
from vmdev_fuzz import strategies
from vmdev_fuzz.cases import PlanCase
from vmdev_fuzz.checks import violations_of
from vmdev_fuzz.runner import Session
from vmdev_fuzz.strategies import CORE_KEYS, ROOT

from vmdev.declared import BOOLEAN, INTEGER, NUMBER, STRING, STRINGS, TABLE, TABLES, Setting
from vmdev.errors import VmdevError
from vmdev.settings import SandboxSettings

WRONG_TYPES: tuple[Any, ...] = (5, 1.5, True, "x", [], {}, [1], {"a": {"b": []}}, 10**4301, math.nan,
                                datetime.datetime(2024, 1, 1))
HOSTILE_STRINGS: tuple[str, ...] = ("", "/dev/\ud800x", "/dev/\udc80", "a\udc80", "a\nb", "/dev/shm\nx", "a,b=c",
                                    "/a,,b", "\u2028", "a\x85b", "\x1b[31m", " a ", "é", "x" * 5000, "/" + "a" * 300,
                                    ROOT + "/x,share=on", "a\x00b")


def edge_values(setting: Setting) -> list[Any]:
    """The values a key is swept with: its own type's edges and every other type."""
    low = int(setting.minimum) if setting.minimum is not None else -(2**63)
    high = int(setting.maximum) if setting.maximum is not None else 2**64 - 1
    by_type: dict[str, list[Any]] = {
        STRING: [*setting.choices, *setting.aliases, *HOSTILE_STRINGS],
        INTEGER: [low, high, low - 1, high + 1, 0, -1, 2**64],
        NUMBER: [float(low), float(high), math.inf, -math.inf, low - 1.5],
        BOOLEAN: [True, False],
        STRINGS: [[], [""], ["a,b"], ["\ud800"], ["a\nb"], list(setting.choices)],
        TABLE: [{}, {"a": "b"}, {"\ud800": 1}, {"a": {"b": {"c": []}}}],
        TABLES: [[], [{}], [{"socket": "/run/a,b", "mac": "52:54:00:12:34:56"}],
                 [{"socket": "/run/\ud800", "mac": "52:54:00:12:34:56"}], [{"socket": 5}], [{"mac": "x"}],
                 [{"socket": "/run/a\nb", "mac": "52:54:00:12:34:56"}]],
    }
    own = by_type.get(setting.type, [])
    return [*own, *(v for v in WRONG_TYPES if not _same_type(setting, v))]


def _same_type(setting: Setting, value: Any) -> bool:
    kinds = {STRING: str, INTEGER: int, NUMBER: float, BOOLEAN: bool, STRINGS: list, TABLE: dict, TABLES: list}
    kind = kinds.get(setting.type, object)
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def declared_keys() -> list[Setting]:
    return sorted(strategies.declared(), key=lambda s: (s.name, s.backends))


def cases(setting: Setting) -> list[PlanCase]:
    backends = [b for b in strategies.backends() if setting.applies_to(b)]
    out = []
    for index, value in enumerate(edge_values(setting)):
        hv = backends[index % len(backends)]
        runtime = setting.section == "runtime"
        out.append(PlanCase(hypervisor=hv, hotplug=bool(index % 2), options={} if runtime else {setting.name: value},
                            runtime={setting.name: value} if runtime else {}, document=strategies.oci([{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]),
                            toml=index % 3 == 0))
    return out


@pytest.mark.parametrize("setting", declared_keys(), ids=lambda s: s.name + ("@" + "+".join(s.backends) if s.backends
                                                                             else ""))
def test_each_settings_key_takes_any_value_or_refuses_it_in_one_line(session: Session, setting: Setting) -> None:
    found = [line for case in cases(setting) for line in violations_of(session, "settings", case)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("key", sorted(CORE_KEYS))
def test_the_cores_own_keys_take_any_value_or_refuse_it_in_one_line(session: Session, key: str) -> None:
    values = [*WRONG_TYPES, -1, 0, 2**31, 2**51, 2**64, "", "q35,accel=kvm", "pc\n", "\ud800", None]
    for index, value in enumerate(values):
        case = PlanCase(hypervisor=strategies.backends()[index % len(strategies.backends())],
                        options={key: value}, document=strategies.oci([]), toml=bool(index % 2))
        found = violations_of(session, "settings", case)
        assert not found, "\n".join(found)


@pytest.mark.parametrize("fields", [{"machine_type": 1.5}, {"machine_type": "q35,x=y"}, {"memory_mib": 2**51},
                                    {"memory_mib": True}, {"memory_mib": 1.5}, {"hypervisor": 5},
                                    {"hypervisor": "qemu\n"}, {"machine_type": "\ud800"}])
def test_sandbox_settings_of_the_wrong_type_are_one_line_config_errors(fields: dict[str, Any]) -> None:
    with pytest.raises(VmdevError) as caught:
        SandboxSettings(**fields)
    assert "\n" not in str(caught.value) and caught.value.field
