"""Plugin loading controls, failure isolation, tracing and the typed facade."""

from __future__ import annotations

import inspect
import logging
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from vmdev import hookspecs
from vmdev.errors import PluginError, UnclaimedDeviceError
from vmdev.models import DeviceInfo
from vmdev.plugins import LoadPolicy, PluginLoadWarning, PluginManager
from vmdev.settings import SandboxSettings

MakeDist = Callable[..., Path]

BACKENDS = ["vmdev.backend.qemu", "vmdev.backend.cloud-hypervisor", "vmdev.backend.firecracker"]
BUILTINS = ["vmdev.host_path", "vmdev.generic", *BACKENDS]

VENDOR = """
from vmdev import hookimpl
from vmdev.models import GenericDevice
IMPORTED = True

@hookimpl
def build_device(info):
    if info.container_path == "/dev/vendor":
        return GenericDevice(id="vendor0", container_path=info.container_path, host_path=info.host_path,
                             dev_type=info.dev_type, major=info.major, minor=info.minor)
"""


def names(pm: PluginManager) -> list[str]:
    return pm.plugin_names()


def test_policy_from_env() -> None:
    assert LoadPolicy.from_env({}) == LoadPolicy()
    policy = LoadPolicy.from_env(
        {
            "VMDEV_PLUGINS": " a , b,",
            "VMDEV_DISABLE_PLUGINS": "x,y",
            "VMDEV_DISABLE_PLUGIN_AUTOLOAD": "1",
            "VMDEV_TRACE_PLUGINS": "true",
        }
    )
    assert policy == LoadPolicy(only=("a", "b"), disabled={"x", "y"}, autoload=False, trace=True)
    assert LoadPolicy.from_env({"VMDEV_PLUGINS": ""}).only == ()


def test_empty_plugin_list_loads_only_the_core_defaults(make_dist: MakeDist) -> None:
    make_dist("vendor-dev", {"vendor": "vendor_mod"}, {"vendor_mod": VENDOR})
    assert names(PluginManager(LoadPolicy(only=())).load()) == BUILTINS


def test_autoload_finds_entry_points(make_dist: MakeDist) -> None:
    make_dist("vendor-dev", {"vendor": "vendor_mod"}, {"vendor_mod": VENDOR}, version="2.5")
    pm = PluginManager(LoadPolicy()).load()
    info = {i.name: i for i in pm.list_plugins()}["vendor"]
    assert (info.distribution, info.version, info.hooks) == ("vendor-dev", "2.5", ("build_device",))


def test_named_distributions_load_without_scanning_metadata(
    make_dist: MakeDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    from vmdev import plugins

    make_dist("vendor-dev", {"vendor": "vendor_mod"}, {"vendor_mod": VENDOR})
    make_dist("other-dev", {"other": "vendor_mod"}, {})

    def no_scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("scanned all installed metadata")

    read: list[tuple[str, str]] = []
    real_read = plugins._Dist.read

    def reading(self: plugins._Dist, filename: str) -> str | None:
        read.append((self.stem_name, filename))
        return real_read(self, filename)

    monkeypatch.setattr(importlib.metadata, "entry_points", no_scan)
    monkeypatch.setattr(importlib.metadata, "distributions", no_scan)
    monkeypatch.setattr(plugins._Dist, "read", reading)
    pm = PluginManager(LoadPolicy(only=("Vendor_Dev",))).load()
    assert names(pm) == [*BUILTINS, "vendor"]
    assert read == [("vendor_dev", "entry_points.txt")]  # not even the other one's


def test_loading_reads_entry_points_but_no_metadata_until_a_name_is_shown(
    make_dist: MakeDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning never prints a distribution's name or version: METADATA is read for `vmdev plugins`."""
    from vmdev import plugins

    make_dist("Vendor.Dev", {"vendor": "vendor_mod"}, {"vendor_mod": VENDOR}, version="2.5")
    read: list[str] = []
    real_read = plugins._Dist.read

    def reading(self: plugins._Dist, filename: str) -> str | None:
        read.append(filename)
        return real_read(self, filename)

    monkeypatch.setattr(plugins._Dist, "read", reading)
    pm = PluginManager(LoadPolicy()).load()
    assert "vendor" in names(pm) and "METADATA" not in read
    assert pm.backends().get("qemu").distribution == "vmdev" and "METADATA" not in read
    info = {i.name: i for i in pm.list_plugins()}["vendor"]
    assert (info.distribution, info.version) == ("Vendor.Dev", "2.5")
    assert "METADATA" in read


def test_the_entry_points_found_are_importlib_metadata_s_in_its_order(make_dist: MakeDist) -> None:
    """vmdev reads metadata directories itself (no email parser): the same plugins, the same order
    (which decides who answers first), the same names and versions."""
    import importlib.metadata

    from vmdev import plugins

    make_dist("zz-dev", {"zz": "zz_mod", "aa": "aa_mod"}, {})
    make_dist("Mixed_Case.Dev", {"mixed": "pkg.mod:attr.inner [extra]"}, {}, version="3.0rc1")
    make_dist("vmdev", {"shadow": "shadow_mod"}, {}, version="0.0")  # shadows the installed vmdev
    expected = [(ep.name, ep.value, ep.dist.metadata["Name"], ep.dist.version)  # type: ignore[union-attr]
                for ep in importlib.metadata.entry_points(group="vmdev")]
    found = [(name, value, dist.name, dist.version)
             for name, value, dist in plugins._installed_entry_points("vmdev")[0]]
    assert found == expected
    assert {n for n, *_ in found[:4]} == {"zz", "aa", "mixed", "shadow"}  # first on sys.path: first


def test_autoload_off_loads_no_entry_points(make_dist: MakeDist) -> None:
    make_dist("vendor-dev", {"vendor": "vendor_mod"}, {"vendor_mod": VENDOR})
    assert names(PluginManager(LoadPolicy(autoload=False)).load()) == BUILTINS
    # an explicit list is not "auto" loading
    assert "vendor" in names(PluginManager(LoadPolicy(only=("vendor-dev",), autoload=False)).load())


@pytest.mark.parametrize("blocked", ["vendor", "vendor-dev", "VENDOR_DEV"])
def test_disabled_plugins_are_never_imported(make_dist: MakeDist, blocked: str) -> None:
    make_dist("vendor-dev", {"vendor": "vendor_blocked_mod"}, {"vendor_blocked_mod": "raise SystemExit('imported!')"})
    pm = PluginManager(LoadPolicy(disabled={blocked})).load()
    assert "vendor" not in names(pm)
    assert "vendor_blocked_mod" not in sys.modules


def test_builtins_can_be_disabled_too() -> None:
    pm = PluginManager(LoadPolicy(only=(), disabled={"vmdev.generic"})).load()
    assert names(pm) == ["vmdev.host_path", *BACKENDS]


def test_broken_plugin_warns_and_the_rest_keep_working(make_dist: MakeDist) -> None:
    make_dist("broken-dev", {"broken": "broken_mod"}, {"broken_mod": "import no_such_module_xyz"})
    make_dist("vendor-dev", {"vendor": "vendor_mod"}, {"vendor_mod": VENDOR})
    with pytest.warns(PluginLoadWarning, match="'broken' from distribution 'broken-dev' failed to load"):
        pm = PluginManager(LoadPolicy(only=("broken-dev", "vendor-dev"))).load()
    assert names(pm) == [*BUILTINS, "vendor"]
    info = DeviceInfo(container_path="/dev/vendor", dev_type="c", major=1, minor=3, host_path="/dev/null")
    assert pm.build_device(info, None, SandboxSettings()).plugin == "vendor"  # type: ignore[arg-type]


def test_missing_named_distribution_warns() -> None:
    with pytest.warns(PluginLoadWarning, match="'not-installed-dist', which is not installed"):
        PluginManager(LoadPolicy(only=("not-installed-dist",))).load()


def test_load_is_lazy_and_idempotent(make_dist: MakeDist) -> None:
    make_dist("vendor-dev", {"vendor": "vendor_lazy_mod"}, {"vendor_lazy_mod": VENDOR})
    pm = PluginManager(LoadPolicy(only=("vendor-dev",)))
    assert "vendor_lazy_mod" not in sys.modules
    pm.load()
    pm.load()
    assert names(pm).count("vendor") == 1


def test_import_vmdev_scans_and_loads_nothing() -> None:
    code = (
        "import sys, importlib.metadata as m\n"
        "def boom(*a, **k): raise SystemExit('scanned')\n"
        "m.entry_points = m.distributions = boom\n"
        "import vmdev\n"
        "assert vmdev.hookimpl is not None\n"
        "assert 'vmdev.plugins' not in sys.modules, 'plugin machinery imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


class Raising:
    @hookspecs.hookimpl(tryfirst=True)
    def build_device(self, info: DeviceInfo) -> None:
        raise RuntimeError("boom")


class WrongType:
    @hookspecs.hookimpl(tryfirst=True)
    def build_device(self, info: DeviceInfo) -> str:
        return "not a device"


DEV = DeviceInfo(container_path="/dev/null", dev_type="c", major=1, minor=3, host_path="/dev/null")


def test_plugin_exception_becomes_one_clear_error() -> None:
    pm = PluginManager(LoadPolicy(only=()), plugins=[("raising", Raising())]).load()
    with pytest.raises(PluginError) as exc:
        pm.build_device(DEV, None, SandboxSettings())  # type: ignore[arg-type]
    assert str(exc.value) == "/dev/null: plugin 'raising' failed in build_device: RuntimeError: boom"


def test_plugin_returning_a_wrong_type_is_caught() -> None:
    pm = PluginManager(LoadPolicy(only=()), plugins=[("wrong", WrongType())]).load()
    with pytest.raises(PluginError, match="returned str from build_device, expected Device"):
        pm.build_device(DEV, None, SandboxSettings())  # type: ignore[arg-type]


def test_unclaimed_block_device_is_an_error_not_a_generic_device() -> None:
    pm = PluginManager(LoadPolicy(only=())).load()
    block = DeviceInfo(container_path="/dev/loop0", dev_type="b", major=7, minor=0, host_path="/dev/loop0")
    with pytest.raises(UnclaimedDeviceError, match="no installed plugin handles block devices") as exc:
        pm.build_device(block, None, SandboxSettings())  # type: ignore[arg-type]
    assert exc.value.device == "/dev/loop0" and exc.value.field == "type"


def test_trace_logs_every_call_and_result(caplog: pytest.LogCaptureFixture) -> None:
    pm = PluginManager(LoadPolicy(only=(), trace=True)).load()
    with caplog.at_level(logging.DEBUG, logger="vmdev.trace"):
        pm.build_device(DEV, None, SandboxSettings())  # type: ignore[arg-type]
    messages = [r.getMessage() for r in caplog.records if r.name == "vmdev.trace"]
    assert any(m.startswith("build_device[vmdev.generic](DeviceInfo(") and "-> GenericDevice(" in m
               for m in messages)
    assert any(m.startswith("build_device result: [('vmdev.generic', GenericDevice(") for m in messages)


def test_environment_policy_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMDEV_PLUGINS", "")
    monkeypatch.setenv("VMDEV_DISABLE_PLUGINS", "vmdev.generic")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert names(PluginManager().load()) == ["vmdev.host_path", *BACKENDS]


# --- every hook is specified, typed and documented ------------------------------------------
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "vmdev_spec")]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugin-hooks.md"


def test_the_expected_hooks_exist() -> None:
    assert {"resolve_host_path", "build_device", "attach_options", "sandbox_devices"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_contract_and_types(hook: str) -> None:
    fn = getattr(hookspecs, hook)
    doc = inspect.getdoc(fn) or ""
    assert len(doc) > 80, f"{hook} needs a docstring stating its contract"
    hints = fn.__annotations__
    assert "return" in hints and all(p in hints for p in inspect.signature(fn).parameters)
    if fn.vmdev_spec.get("firstresult"):
        assert "first non-None result" in doc


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook: str) -> None:
    assert f"## `{hook}(" in DOCS.read_text(encoding="utf-8"), f"document {hook} in {DOCS}"
