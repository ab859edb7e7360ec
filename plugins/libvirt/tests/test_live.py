"""The live driver against a fake virsh that keeps a domain's live and persistent definitions."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest

from vmdev.errors import UnsupportedError
from vmdev.live import DetachTimeoutError, HotplugError, VmUnreachableError
from vmdev.qemu import MemoryNeeds
from vmdev_libvirt import live
from vmdev_libvirt.live import LibvirtDriver, LibvirtError, one_line
from vmdev_libvirt.target import LibvirtAttach

DOMAIN = """<domain type='qemu'><name>sb</name><devices>
<controller type='pci' index='0' model='pcie-root'/>
<controller type='pci' index='1' model='pcie-root-port'/>
<controller type='pci' index='2' model='pcie-root-port'/>
<controller type='pci' index='3' model='pcie-root-port'/>
<rng model='virtio'><backend model='random'>/dev/urandom</backend><alias name='ua-rng0'/>
<address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></rng>
</devices></domain>"""


def disk(alias: str, bus: int = 2) -> str:
    return (f"<disk type='file' device='disk'><source file='/img/{alias}.raw'/><target dev='vdb' bus='virtio'/>"
            f"<alias name='{alias}'/><address type='pci' domain='0x0000' bus='0x{bus:02x}' slot='0x00' "
            "function='0x0'/></disk>")


class FakeVirsh:
    """virsh for one domain: dumpxml, dominfo, attach-device and detach-device with their flags."""

    def __init__(self, *, persistent: bool = True, fail_alias: str = "", sticky: int = 0,
                 domstate: str = "running") -> None:
        self.domstate = domstate
        self.state = {"live": ET.fromstring(DOMAIN), "config": ET.fromstring(DOMAIN)}
        self.calls: list[tuple[str, ...]] = []
        self.persistent = persistent
        self.fail_alias = fail_alias
        #: dumpxml calls for which a detached device still shows (the guest is slow to let go)
        self.sticky = sticky
        self.pending: list[str | None] = []

    def run(self, *args: str, stdin: str | None = None) -> str:
        self.calls.append(args)
        command = args[0]
        if command == "domstate":
            return self.domstate + "\n"
        if command == "dominfo":
            return f"Name: sb\nPersistent:     {'yes' if self.persistent else 'no'}\n"
        if command == "dumpxml":
            self._settle()
            return ET.tostring(self.state["config" if "--inactive" in args else "live"], encoding="unicode")
        assert stdin is not None
        node = ET.fromstring(stdin)
        alias = node.find("alias").get("name")  # type: ignore[union-attr]
        where = [w for w, flag in (("live", "--live"), ("config", "--config")) if flag in args]
        if command == "attach-device":
            if alias == self.fail_alias:
                raise LibvirtError("internal error: unable to execute QEMU command 'blockdev-add': Could not open")
            for w in where:
                self.state[w].find("devices").append(node)
        elif command == "detach-device":
            for w in where:
                self._drop(w, alias)
        return ""

    def _drop(self, where: str, alias: str | None) -> None:
        if where == "live" and self.sticky:
            self.pending.append(alias)
            return
        devices = self.state[where].find("devices")
        for child in list(devices):
            found = child.find("alias")
            if found is not None and found.get("name") == alias:
                devices.remove(child)

    def _settle(self) -> None:
        if self.pending and self.sticky:
            self.sticky -= 1
            if not self.sticky:
                for alias in self.pending:
                    self._drop("live", alias)
                self.pending.clear()

    def aliases(self, where: str) -> set[str]:
        return {a.get("name", "") for a in self.state[where].iter("alias")}


Progress = Callable[[int], None]


def recorder() -> tuple[list[int], Progress]:
    seen: list[int] = []
    return seen, seen.append


def test_free_ports_are_the_root_ports_no_device_sits_behind() -> None:
    driver = LibvirtDriver(FakeVirsh(), "sb")
    assert [p.id for p in driver.free_ports()] == ["pci.2", "pci.3"]
    assert {p.kind for p in driver.free_ports()} == {"root-port"}


def test_plug_attaches_live_and_persistently_and_reports_progress() -> None:
    virsh = FakeVirsh()
    seen, progress = recorder()
    LibvirtDriver(virsh, "sb").plug([{"attach": disk("ua-d1")}], device="/d1", progress=progress)
    assert seen == [1]
    assert "ua-d1" in virsh.aliases("live") and "ua-d1" in virsh.aliases("config")
    attach = next(c for c in virsh.calls if c[0] == "attach-device")
    assert attach == ("attach-device", "--domain", "sb", "--file", "/dev/stdin", "--live", "--config")


def test_a_transient_domain_is_changed_live_only() -> None:
    virsh = FakeVirsh(persistent=False)
    LibvirtDriver(virsh, "sb").plug([{"attach": disk("ua-d1")}], device="/d1", progress=lambda _: None)
    assert "ua-d1" in virsh.aliases("live") and "ua-d1" not in virsh.aliases("config")


def test_a_failed_attach_leaves_no_element_in_the_domain() -> None:
    virsh = FakeVirsh(fail_alias="ua-d2")
    steps = [{"attach": disk("ua-d1")}, {"attach": disk("ua-d2", bus=3)}]
    with pytest.raises(HotplugError) as caught:
        LibvirtDriver(virsh, "sb").plug(steps, device="/d", progress=lambda _: None)
    message = str(caught.value)
    assert "hot plug step 2 of 2, attach disk ua-d2, failed: libvirt: internal error" in message
    assert "rolled back: disk ua-d1" in message
    assert caught.value.leftovers == () and caught.value.steps_done == 1
    assert not {"ua-d1", "ua-d2"} & (virsh.aliases("live") | virsh.aliases("config"))


def test_unplug_waits_for_the_guest_and_skips_what_is_gone() -> None:
    virsh = FakeVirsh(sticky=3)
    driver = LibvirtDriver(virsh, "sb", unplug_timeout=5)
    driver.plug([{"attach": disk("ua-d1")}], device="/d1", progress=lambda _: None)
    seen, progress = recorder()
    driver.unplug([{"detach": disk("ua-d1")}], device="/d1", progress=progress)
    assert seen == [1] and "ua-d1" not in virsh.aliases("live") | virsh.aliases("config")
    before = len(virsh.calls)
    driver.unplug([{"detach": disk("ua-d1")}], device="/d1", progress=lambda _: None)
    assert not [c for c in virsh.calls[before:] if c[0] == "detach-device"]


def test_a_guest_that_keeps_the_device_is_a_detach_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "POLL_SECONDS", 0.01)
    virsh = FakeVirsh(sticky=10_000)
    driver = LibvirtDriver(virsh, "sb", unplug_timeout=0.05)
    driver.plug([{"attach": disk("ua-d1")}], device="/d1", progress=lambda _: None)
    with pytest.raises(DetachTimeoutError, match="did not release ua-d1") as caught:
        driver.unplug([{"detach": disk("ua-d1")}], device="/d1", progress=lambda _: None)
    assert caught.value.leftovers == ({"detach": disk("ua-d1")},)


def test_cleanup_removes_what_an_interrupted_attach_left() -> None:
    virsh = FakeVirsh()
    driver = LibvirtDriver(virsh, "sb")
    driver.plug([{"attach": disk("ua-d1")}], device="/d1", progress=lambda _: None)
    driver.cleanup([{"attach": disk("ua-d1")}, {"attach": disk("ua-d2", bus=3)}], device="/d1")
    assert "ua-d1" not in virsh.aliases("live") | virsh.aliases("config")


def test_presence_is_told_per_alias() -> None:
    driver = LibvirtDriver(FakeVirsh(), "sb")
    steps = [{"attach": "<rng model='virtio'><alias name='ua-rng0'/></rng>"}, {"attach": disk("ua-d9")}]
    assert driver.presence(steps) == [("rng ua-rng0", True), ("disk ua-d9", False)]


def test_check_ready_wants_the_controller_and_shared_memory_from_boot() -> None:
    driver = LibvirtDriver(FakeVirsh(), "sb")
    scsi = LibvirtAttach(controllers={"scsi0": "<controller type='scsi' index='0' model='virtio-scsi'/>"})
    with pytest.raises(UnsupportedError, match="needs controller scsi0"):
        driver.check_ready(scsi, device="/d1")
    with pytest.raises(UnsupportedError, match="guest RAM shared"):
        driver.check_ready(LibvirtAttach(memory=MemoryNeeds(shared=True)), device="/fs")
    driver.check_ready(LibvirtAttach(devices=[disk("ua-d1")]), device="/d1")


def test_steps_of_another_kind_are_refused_before_anything_runs() -> None:
    virsh = FakeVirsh()
    with pytest.raises(UnsupportedError, match=r"runs \{\"attach\": XML\} steps"):
        LibvirtDriver(virsh, "sb").plug([{"execute": "device_add"}], device="/d", progress=lambda _: None)
    assert virsh.calls == []


def test_virsh_errors_become_one_line() -> None:
    text = ("error: Failed to attach device from /dev/stdin\nerror: internal error: unable to execute QEMU "
            "command 'blockdev-add': Could not open '/x': No such file or directory\n")
    assert one_line(text) == ("internal error: unable to execute QEMU command 'blockdev-add': Could not open "
                              "'/x': No such file or directory")


def test_a_domain_name_that_looks_like_an_option_is_refused() -> None:
    with pytest.raises(LibvirtError):
        LibvirtDriver(FakeVirsh(), "--all")


def test_the_connection_uri_is_the_flag_then_the_setting_then_libvirts_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import attrs

    from vmdev.backend import LiveConnection
    from vmdev.settings import SandboxSettings
    from vmdev_libvirt.live import connection_uri

    monkeypatch.delenv("LIBVIRT_DEFAULT_URI", raising=False)
    assert connection_uri(LiveConnection(options={"domain": "sb"})) == "qemu:///system"
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "qemu:///session")
    assert connection_uri(LiveConnection(options={"domain": "sb"})) == "qemu:///session"

    @attrs.frozen(kw_only=True)
    class WithSettings(LiveConnection):
        settings: SandboxSettings

    carried = WithSettings(options={"domain": "sb"},
                           settings=SandboxSettings(hypervisor="libvirt", options={"libvirt_uri": "test:///default"}))
    assert connection_uri(carried) == "test:///default"
    flagged = WithSettings(options={"domain": "sb", "connect": "qemu+ssh://h/system"}, settings=carried.settings)
    assert connection_uri(flagged) == "qemu+ssh://h/system"


def connected(monkeypatch: pytest.MonkeyPatch, fake: FakeVirsh) -> LibvirtDriver:
    """``live.connect`` for domain sb, with ``fake`` as the virsh it starts."""
    from vmdev.backend import LiveConnection

    monkeypatch.setattr(live, "Virsh", lambda uri, timeout: fake)
    return live.connect(LiveConnection(options={"domain": "sb", "connect": "test:///default"}))


def test_the_driver_asks_libvirt_nothing_until_a_device_needs_the_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    """A generic device's attach or detach makes the driver and never uses it: no virsh process."""
    fake = FakeVirsh()
    driver = connected(monkeypatch, fake)
    assert fake.calls == []
    assert [p.id for p in driver.free_ports()] == ["pci.2", "pci.3"]
    driver.presence([{"attach": disk("ua-x")}])
    assert fake.calls[0] == ("domstate", "--domain", "sb")
    assert [call[0] for call in fake.calls].count("domstate") == 1


@pytest.mark.parametrize("state", ["shut off", "paused", ""])
def test_a_domain_that_is_not_running_is_refused_by_its_first_command(
    monkeypatch: pytest.MonkeyPatch, state: str
) -> None:
    fake = FakeVirsh(domstate=state)
    driver = connected(monkeypatch, fake)
    with pytest.raises(LibvirtError) as exc:
        driver.free_ports()
    said = state or "in no known state"
    assert (exc.value.message, exc.value.device, exc.value.field) == (
        f"domain sb is {said}, not running", "test:///default", "domain")
    assert fake.calls == [("domstate", "--domain", "sb")]


@pytest.mark.parametrize("method", ["plug", "unplug", "cleanup"])
def test_a_domain_that_is_not_running_fails_a_change_with_nothing_done(
    monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """Not a failed first step: a plug's roll-back would report the element left in the domain (the
    manager would keep it to clean up), and a detach would be recorded as under way."""
    fake = FakeVirsh(domstate="shut off")
    driver = connected(monkeypatch, fake)
    element = disk("ua-d1")
    run = {"plug": lambda: driver.plug([{"attach": element}], device="/d1", progress=lambda _: None),
           "unplug": lambda: driver.unplug([{"detach": element}], device="/d1", progress=lambda _: None),
           "cleanup": lambda: driver.cleanup([{"attach": element}], device="/d1")}[method]
    with pytest.raises(VmUnreachableError) as exc:
        run()
    assert (exc.value.message, exc.value.steps_done, exc.value.leftovers, exc.value.uncertain) == (
        "domain sb is shut off, not running", 0, (), False)
    assert fake.calls == [("domstate", "--domain", "sb")]
