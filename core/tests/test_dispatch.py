"""Hooks are dispatched through pluggy's pm.hook: wrappers, monitoring and tracing work; who
answered is known; misspelt hooks are refused."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from vmdev import hookimpl
from vmdev.errors import PluginError
from vmdev.models import DeviceInfo, GenericDevice
from vmdev.plugins import LoadPolicy, PluginManager
from vmdev.settings import SandboxSettings

DEV = DeviceInfo(container_path="/dev/null", dev_type="c", major=1, minor=3, host_path="/dev/null")


def manager(*plugins: tuple[str, object]) -> PluginManager:
    return PluginManager(LoadPolicy(only=()), plugins=list(plugins)).load()


class Observer:
    """A new-style wrapper: sees the result, lets it through."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl(wrapper=True)
    def build_device(self, info: DeviceInfo) -> Generator[None, Any, Any]:
        result = yield
        self.seen.append(result)
        return result


class Replacer:
    """A new-style wrapper that replaces the answer."""

    @hookimpl(wrapper=True)
    def build_device(self, info: DeviceInfo) -> Generator[None, Any, Any]:
        result = yield
        return GenericDevice(id="replaced0", container_path=result.container_path, host_path=result.host_path,
                             dev_type="c", major=1, minor=3)


class OldStyle:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl(hookwrapper=True)
    def build_device(self, info: DeviceInfo) -> Generator[None, Any, None]:
        self.calls += 1
        yield


class Misspelt:
    @hookimpl
    def build_devices(self, info: DeviceInfo) -> None:  # the real hook is build_device
        return None


class Optional:
    @hookimpl(optionalhook=True)
    def some_other_projects_hook(self) -> None:
        return None


def test_a_wrapper_true_hook_implementation_works_and_sees_the_result() -> None:
    observer = Observer()
    answer = manager(("observer", observer)).build_device(DEV, None, SandboxSettings())  # type: ignore[arg-type]
    assert answer.plugin == "vmdev.generic"
    assert observer.seen == [answer.value]


def test_an_old_style_hookwrapper_works() -> None:
    old = OldStyle()
    manager(("old", old)).build_device(DEV, None, SandboxSettings())  # type: ignore[arg-type]
    assert old.calls == 1


def test_an_answer_replaced_by_a_wrapper_is_attributed_to_the_wrapper() -> None:
    answer = manager(("replacer", Replacer())).build_device(DEV, None, SandboxSettings())  # type: ignore[arg-type]
    assert answer.value.id == "replaced0"
    assert answer.plugin == "(a hook wrapper)"


def test_a_misspelt_hook_is_refused_naming_the_plugin_the_hook_and_the_real_one() -> None:
    pm = PluginManager(LoadPolicy(only=()), plugins=[("typo", Misspelt())])
    with pytest.raises(PluginError) as exc:
        pm.load()
    assert str(exc.value) == (
        "hooks: plugin 'typo' implements 'build_devices', which is not a vmdev hook (did you mean "
        "build_device?); see docs/plugin-hooks.md"
    )


def test_an_optional_hook_for_another_project_is_not_refused() -> None:
    assert "optional" in manager(("optional", Optional())).plugin_names()


def test_pluggys_call_monitoring_sees_every_hook_call() -> None:
    pm = manager()
    calls: list[str] = []
    undo = pm.pluggy.add_hookcall_monitoring(lambda name, impls, kwargs: calls.append(name),
                                              lambda outcome, name, impls, kwargs: None)
    try:
        pm.build_device(DEV, None, SandboxSettings())  # type: ignore[arg-type]
    finally:
        undo()
    assert calls == ["build_device"]


def test_each_planned_device_keeps_the_plugin_that_built_it() -> None:
    from vmdev.oci import parse_spec
    from vmdev.planner import plan

    spec = parse_spec({"linux": {"devices": [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]}})
    result = plan(spec, SandboxSettings(), plugins=manager(("observer", Observer())))
    assert [d.plugin for d in result.devices] == ["vmdev.generic"]
    assert result.to_json()["devices"][0]["plugin"] == "vmdev.generic"


class Daemons:
    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def finish_plan(self) -> dict[str, Any]:
        return {"daemons": [{"id": self.name, "program": "/bin/true", "args": [], "socket": "", "for": "x"}]}


def test_daemons_from_several_plugins_are_one_list_in_plugin_order() -> None:
    from vmdev.oci import parse_spec
    from vmdev.planner import plan

    result = plan(parse_spec({}), SandboxSettings(), plugins=manager(("a", Daemons("a")), ("b", Daemons("b"))))
    assert [d["id"] for d in result.to_json()["daemons"]] == ["b", "a"]  # pluggy calls the last registered first


def test_a_saved_generic_device_comes_back_without_the_host() -> None:
    from vmdev.serialize import to_json

    device = GenericDevice(id="generic-1", container_path="/dev/fuse", host_path="/dev/fuse", dev_type="c",
                           major=10, minor=229, file_mode=0o666)
    pm = manager()
    assert pm.device_from_state("generic", to_json(device), "vmdev.generic", name="/dev/fuse") == device
    assert pm.pluggy.hook.device_from_state(kind="block", data={}, plugin="block") is None
