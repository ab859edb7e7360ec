"""Files a caller names (settings TOML, OCI spec, state file, ``--oci-device @FILE``) and what a state
file holds are hostile input: every problem is one line naming the file (and the field), never a
hang, a traceback, an "internal error" or a line of output forged by the file.

The permission cases run as the user running the tests when that is not root, and in a forked
child that dropped to nobody (65534) when it is root (root may write anywhere): they assert the
same thing either way.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner

from vmdev import cli, oci, sandbox_ops, settings, state
from vmdev.cli import main, run_plain
from vmdev.cliutil import errors_as_one_line
from vmdev.errors import ConfigError, VmdevError
from vmdev.oci import load_spec
from vmdev.qemu import QmpCommand
from vmdev.registry import describe_status
from vmdev.sandbox_ops import oci_device, record_text
from vmdev.settings import SandboxSettings, load_settings
from vmdev.state import (
    MAX_STATE_BYTES,
    Attachment,
    AttachPhase,
    DeviceRecord,
    SandboxState,
    StateCorruptError,
    StateError,
    StateFile,
    encode,
    process_alive,
    write_atomically,
)
from vmdev.strictjson import MAX_JSON_DEPTH, json_value

NOBODY = 65534
ENTRY = '{"path": "/dev/xvdb", "type": "b", "major": 8, "minor": 16}'


# --- caller-supplied files ---------------------------------------------------------------------------
def _settings(path: Path) -> object:
    return load_settings(path)


def _spec(path: Path) -> object:
    return load_spec(path)


def _state(path: Path) -> object:
    return StateFile(path).load()


def _oci_device(path: Path) -> object:
    return oci_device(f"@{path}")


#: every reader of a caller's file: (reader, the error it raises, what its messages start with)
READERS = [
    pytest.param(_settings, ConfigError, "cannot read settings file: ", id="--config"),
    pytest.param(_spec, ConfigError, "cannot read OCI spec: ", id="config.json"),
    pytest.param(_state, StateError, "cannot read the state file: ", id="--state"),
    pytest.param(_oci_device, ConfigError, "cannot read: ", id="--oci-device @FILE"),
]


def _outcome(read: Callable[[Path], object], path: Path) -> BaseException | None:
    """What ``read(path)`` raised, from a thread: a reader that blocks fails the test, not the run."""
    found: list[BaseException | None] = []

    def run() -> None:
        try:
            read(path)
            found.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            found.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), f"reading {path} blocked"
    return found[0]


def _one_line_about(exc: BaseException | None, kind: type[VmdevError], path: Path, text: str) -> None:
    assert isinstance(exc, kind), repr(exc)
    assert exc.device == str(path) and text in exc.message, str(exc)
    assert "\n" not in str(exc)


@pytest.mark.parametrize(("read", "kind", "prefix"), READERS)
def test_a_fifo_named_as_a_caller_file_is_refused_without_blocking(
    tmp_path: Path, read: Callable[[Path], object], kind: type[VmdevError], prefix: str
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    _one_line_about(_outcome(read, fifo), kind, fifo, prefix + "not a regular file (a FIFO)")


@pytest.mark.parametrize(("read", "kind", "prefix"), READERS)
def test_a_device_node_named_as_a_caller_file_is_refused_unread(
    read: Callable[[Path], object], kind: type[VmdevError], prefix: str
) -> None:
    zero = Path("/dev/zero")  # endless: reading it exhausted memory
    _one_line_about(_outcome(read, zero), kind, zero, prefix + "not a regular file (a character device)")


@pytest.mark.parametrize(
    ("read", "kind", "prefix", "module", "cap"),
    [
        pytest.param(_settings, ConfigError, "cannot read settings file: ", settings, "MAX_SETTINGS_BYTES",
                     id="--config"),
        pytest.param(_spec, ConfigError, "cannot read OCI spec: ", oci, "MAX_SPEC_BYTES", id="config.json"),
        pytest.param(_state, StateError, "cannot read the state file: ", state, "MAX_STATE_BYTES", id="--state"),
        pytest.param(_oci_device, ConfigError, "cannot read: ", sandbox_ops, "MAX_OCI_DEVICE_BYTES",
                     id="--oci-device @FILE"),
    ],
)
def test_a_caller_file_past_its_cap_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read: Callable[[Path], object], kind: type[VmdevError],
    prefix: str, module: Any, cap: str,
) -> None:
    monkeypatch.setattr(module, cap, 64)
    big = tmp_path / "big"
    big.write_bytes(b" " * 65)
    _one_line_about(_outcome(read, big), kind, big, prefix + "larger than 64 bytes")


def test_the_caps_hold_the_largest_real_files_many_times_over() -> None:
    """A 1,000-device sandbox (records as the manager benchmark's) with a journal as long as its
    snapshot, and Kata's biggest shipped configuration file, fit many times."""
    records = [
        DeviceRecord(
            id=f"drive-{n:014x}", key=f"block 8:{n}", kind="block", plugin="block", container_path=f"/dev/vd{n}",
            host_path=f"/dev/sd{n}", device={"index": n}, ref_count=1, attach_count=1,
            attachment=Attachment(
                phase=AttachPhase.ATTACHED, buses=[f"rp{n}"],
                hotplug=[QmpCommand("blockdev-add", {"node-name": f"drive-{n:014x}", "driver": "raw"}),
                         QmpCommand("device_add", {"driver": "virtio-blk-pci", "id": f"virtio-{n}"})],
                unplug=[QmpCommand("device_del", {"id": f"virtio-{n}"})],
            ),
        )
        for n in range(1000)
    ]
    snapshot = encode(SandboxState(settings=SandboxSettings(), devices=records))
    assert 2 * len(snapshot) * 16 < MAX_STATE_BYTES
    kata = Path(__file__).parents[2] / "tests/realworld/kata/runtime-rs/amd64"
    largest = max((p.stat().st_size for p in kata.glob("*.toml")), default=37336)
    assert largest * 16 < settings.MAX_SETTINGS_BYTES


@pytest.mark.parametrize(
    ("read", "kind", "message"),
    [
        pytest.param(_settings, ConfigError, "cannot read settings file: No such file or directory", id="--config"),
        pytest.param(_spec, ConfigError, "cannot read OCI spec: No such file or directory", id="config.json"),
        pytest.param(_state, StateError, "no such state file", id="--state"),
        pytest.param(_oci_device, ConfigError, "cannot read: No such file or directory", id="--oci-device"),
    ],
)
def test_a_missing_caller_file_keeps_its_message(
    tmp_path: Path, read: Callable[[Path], object], kind: type[VmdevError], message: str
) -> None:
    missing = tmp_path / "missing"
    _one_line_about(_outcome(read, missing), kind, missing, message)


def test_an_oci_device_given_inline_is_decoded_as_strictly_as_a_spec() -> None:
    for text, reason in (("[" * 100_000, "nested too deeply"), ('{"major": ' + "9" * 5000 + "}", "5000 digits")):
        with pytest.raises(ConfigError) as exc:
            oci_device(text)
        assert exc.value.field == "--oci-device" and reason in exc.value.message
    assert oci_device(ENTRY).container_path == "/dev/xvdb"


# --- state paths vmdev cannot create or open ---------------------------------------------------------
def _unprivileged(work: Path, action: Callable[[], str]) -> str:
    """``action()`` run in ``work`` without root's privileges: here when not root, else in a child
    that dropped to nobody (its working directory opened first, so paths are taken from there)."""
    if os.geteuid() != 0:
        old = os.getcwd()
        os.chdir(work)
        try:
            return action()
        finally:
            os.chdir(old)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.close(reader)
            os.chdir(work)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            text = action()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            text = f"child failed: {exc!r}"
        os.write(writer, text.encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(pid, 0)
    return text


def _state_error(action: Callable[[], object]) -> Callable[[], str]:
    def run() -> str:
        try:
            action()
        except StateError as exc:
            return f"StateError device={exc.device} | {exc}"
        except BaseException as exc:  # noqa: BLE001 - the test shows it
            return f"not a StateError: {exc!r}"
        return "no error"

    return run


def _locked(path: str) -> None:
    with StateFile(path).locked():
        pass


def test_a_state_path_through_a_file_is_a_state_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("root:x:0:0\n")
    path = tmp_path / "passwd" / "x.json"
    actions: list[Callable[[], object]] = [
        lambda: _locked(str(path)),
        lambda: StateFile(path).save(SandboxState(settings=SandboxSettings())),
        lambda: write_atomically(path, b"{}\n"),
    ]
    for action in actions:
        with pytest.raises(StateError) as exc:
            action()
        assert exc.value.device == str(path)
        assert exc.value.message == f"cannot create its directory: {json.dumps(str(path.parent))} is not a directory"


def test_a_lock_file_that_cannot_be_opened_is_a_state_error_naming_the_state_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    (tmp_path / "x.json.lock").mkdir()  # refused to root too
    with pytest.raises(StateError) as exc:
        _locked(str(path))
    assert exc.value.device == str(path) and "cannot open its lock file" in exc.value.message
    assert exc.value.message.endswith(": Is a directory")


def test_a_state_directory_vmdev_may_not_write_is_a_state_error_for_anyone(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # nobody may enter it (as root, the child is nobody)
    (tmp_path / "ro").mkdir(mode=0o555)
    (tmp_path / "ro").chmod(0o555)
    outcome = _unprivileged(tmp_path, _state_error(lambda: _locked("ro/x.json")))
    assert outcome == ('StateError device=ro/x.json | ro/x.json: cannot open its lock file "ro/x.json.lock": '
                       "Permission denied")
    outcome = _unprivileged(tmp_path, _state_error(lambda: _locked("ro/sub/x.json")))
    assert outcome == ('StateError device=ro/sub/x.json | ro/sub/x.json: cannot create its directory "ro/sub": '
                       "Permission denied")


def test_a_lock_file_another_user_owns_is_a_state_error_for_anyone(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    (tmp_path / "x.json.lock").write_bytes(b"")
    (tmp_path / "x.json.lock").chmod(0o400)  # root's when root runs the tests; not writable either way
    outcome = _unprivileged(tmp_path, _state_error(lambda: _locked("x.json")))
    assert outcome == 'StateError device=x.json | x.json: cannot open its lock file "x.json.lock": Permission denied'


def test_a_state_file_that_may_not_be_read_keeps_its_message(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    StateFile(tmp_path / "x.json").save(SandboxState(settings=SandboxSettings()))
    (tmp_path / "x.json").chmod(0o200)
    outcome = _unprivileged(tmp_path, _state_error(lambda: StateFile("x.json").load()))
    assert outcome == "StateError device=x.json | x.json: cannot read the state file: Permission denied"


# --- what a state file holds -------------------------------------------------------------------------
def _document(**attachment: Any) -> dict[str, Any]:
    record = DeviceRecord(
        id="drive-0123456789abcd", key="block 8:16", kind="block", plugin="block", container_path="/dev/xvdb",
        host_path="/dev/sdb", ref_count=1, attach_count=1,
        attachment=Attachment(phase=AttachPhase.ATTACHED, hotplug=[{"execute": "device_add", "arguments": {}}]),
    )
    document: dict[str, Any] = json.loads(encode(SandboxState(settings=SandboxSettings(), devices=[record])))
    document["devices"][0]["attachment"].update(attachment)
    return document


def _corrupt(tmp_path: Path, data: bytes | dict[str, Any]) -> StateCorruptError:
    path = tmp_path / "state.json"
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode() + b"\n")
    with pytest.raises(StateCorruptError) as exc:
        StateFile(path).load()
    assert exc.value.device == str(path) and "\n" not in str(exc.value)
    return exc.value


def test_a_state_nested_past_what_python_decodes_is_corrupt_naming_its_line(tmp_path: Path) -> None:
    exc = _corrupt(tmp_path, b"[" * 100_000 + b"]" * 100_000 + b"\n")
    assert exc.field == "line 1" and exc.message == "is not valid JSON: nested too deeply"
    journal = json.dumps(_document()).encode() + b"\n" + b"[" * 100_000 + b"]" * 100_000 + b"\n"
    exc = _corrupt(tmp_path, journal)
    assert exc.field == "line 2" and exc.message == "journal line is not valid JSON: nested too deeply"


def test_a_state_value_nested_deeper_than_its_writers_follow_is_refused_at_its_path(tmp_path: Path) -> None:
    document = _document()
    value: Any = 1
    for _ in range(900):  # decodes, but vmdev.serialize and the indenting encoder gave up
        value = [value]
    document["settings"]["options"]["deep"] = value
    exc = _corrupt(tmp_path, document)
    assert exc.field == "line 1.settings.options.deep[0][0]..."  # five steps, then ...
    assert exc.message == f"is not valid JSON: nested more than {MAX_JSON_DEPTH} levels deep"


def test_a_state_value_nested_as_deep_as_allowed_is_read_and_written_again(tmp_path: Path) -> None:
    document = _document()
    value: Any = 1
    for _ in range(MAX_JSON_DEPTH - 3):  # the document, settings and options are three levels
        value = [value]
    document["settings"]["options"]["deep"] = value
    path = tmp_path / "state.json"
    path.write_text(json.dumps(document) + "\n")
    loaded = StateFile(path).load()
    assert json_value(encode(loaded)) == json_value(path.read_bytes())
    assert json.loads(json.dumps(state.to_document(loaded), indent=2)) == document  # what status --json does


def test_a_state_integer_of_thousands_of_digits_is_corrupt(tmp_path: Path) -> None:
    text = json.dumps(_document()).replace('"memory_mib":2048', '"memory_mib":' + "9" * 5000)
    text = text.replace('"memory_mib": 2048', '"memory_mib": ' + "9" * 5000)
    assert "9" * 5000 in text
    exc = _corrupt(tmp_path, text.encode() + b"\n")
    assert exc.field == "line 1" and exc.message == "is not valid JSON: an integer of 5000 digits"


@pytest.mark.parametrize("index", ["x", "9" * 5000, "4294967296", "01", "\u00b2", "\u0661", "-1", ""])
def test_an_allocation_index_that_is_no_number_is_corrupt_in_the_snapshot_and_the_journal(
    tmp_path: Path, index: str
) -> None:
    document = _document()
    document["allocations"] = {"block.index": {index: "owner"}}
    exc = _corrupt(tmp_path, document)
    assert exc.field == "$.allocations" and "an allocation index is not a number from 0 to 4294967295" in exc.message
    assert 'in pool "block.index"' in exc.message and len(exc.message) < 200
    line = json.dumps({"alloc": {"block.index": {index: "owner"}}})
    exc = _corrupt(tmp_path, json.dumps(_document()).encode() + b"\n" + line.encode() + b"\n")
    assert exc.field == "line 2.alloc" and "an allocation index is not a number" in exc.message


def test_allocation_indexes_vmdev_writes_still_load(tmp_path: Path) -> None:
    document = _document()
    document["allocations"] = {"block.index": {"0": "a", "7": "b", "4294967295": "c"}}
    path = tmp_path / "state.json"
    path.write_text(json.dumps(document) + "\n")
    assert StateFile(path).load().allocations == {"block.index": {"0": "a", "7": "b", "4294967295": "c"}}


def test_a_process_id_no_process_can_have_is_corrupt_and_never_signalled(tmp_path: Path) -> None:
    exc = _corrupt(tmp_path, _document(phase="attaching", pid=2**40))
    assert exc.field == "$.devices[0].attachment" and "pid: must be a process id from 0 to 2147483647" in exc.message
    assert not process_alive(2**40) and not process_alive(2**63) and not process_alive(-5)


def test_a_temporary_file_named_after_an_absurd_process_is_cleaned_up_not_signalled(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    stale = tmp_path / f".state.json.tmp-{'9' * 30}-abcd"
    stale.write_bytes(b"")
    StateFile(path).save(SandboxState(settings=SandboxSettings()))
    assert not stale.exists() and StateFile(path).load().devices == ()


# --- status, attach and detach print one line per line -------------------------------------------------
FORGED = "boom\nvmdev: forged line\x1b[31m\u2028"


@pytest.fixture
def quiet_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMDEV_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("VMDEV_PLUGINS", raising=False)


def test_status_text_escapes_what_the_state_file_says(tmp_path: Path, quiet_plugins: None) -> None:
    document = _document(phase="failed", error=FORGED)
    document["devices"][0]["kind"] = "blo\nck"
    document["devices"][0]["container_path"] = "/dev/x\ry"
    path = tmp_path / "state.json"
    path.write_text(json.dumps(document) + "\n")
    done = CliRunner().invoke(main, ["status", "--state", str(path)], catch_exceptions=False)
    assert done.exit_code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert not any(line.startswith("vmdev:") for line in lines) and "\x1b" not in done.stdout
    (row,) = [line for line in lines if line.startswith("drive-")]
    assert "blo\\nck" in row and "/dev/x\\ry" in row
    assert row.endswith("attach failed: boom\\nvmdev: forged line\\x1b[31m\\u2028")
    header = lines[1]
    assert header.index("STATUS") == row.index("attach failed")  # widths measured on the escaped cells
    data = json.loads(CliRunner().invoke(main, ["status", "--state", str(path), "--json"]).stdout)
    assert data["devices"][0]["attachment"]["error"] == FORGED  # JSON keeps the text, escaped by JSON


def test_describe_status_and_the_attach_detach_text_are_one_line_whatever_the_record_says() -> None:
    record = DeviceRecord(
        id="drive-0123456789abcd", key="block 8:16", kind="blo\nck", plugin="block", container_path="/dev/x\ny",
        host_path="/dev/sdb", ref_count=1, attach_count=1,
        attachment=Attachment(phase=AttachPhase.DETACHING, error=FORGED, buses=["rp\n0"],
                              unplug=[{"execute": "device_del\n", "arguments": {"id": "x\n"}}]),
    )
    assert "\n" not in describe_status(record) and describe_status(record).endswith("\\u2028")
    failed = attrs.evolve(record, attachment=Attachment(phase=AttachPhase.FAILED, error=FORGED,
                                                         leftovers=[{"execute": "x\ny"}]))
    assert describe_status(failed) == "attach failed: boom\\nvmdev: forged line\\x1b[31m\\u2028; may be left in " \
                                      "the VM: x\\ny"
    for verb in ("attached", "detached"):
        text = record_text(record, verb, False, {"id": record.id})
        assert text.isprintable() and "blo\\nck" in text and "bus rp\\n0" in text
    assert record_text(None, "detached", False, {"id": "a\nb"}) == "detached a\\nb: no container uses it any " \
                                                                   "more; forgotten"


# --- the internal-error fallback ------------------------------------------------------------------------
def _broken(*args: Any, **kwargs: Any) -> list[str]:
    raise RuntimeError("bad\nvmdev: error: forged")


def test_an_internal_error_is_one_escaped_line_on_the_plain_path_and_through_click(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], quiet_plugins: None
) -> None:
    monkeypatch.setattr(cli, "plugins_text", _broken)
    expected = ("vmdev: error: internal error: RuntimeError: bad\\nvmdev: error: forged (set VMDEV_DEBUG=1 for "
                "details)\n")
    assert run_plain(["plugins"]) == 1
    assert capsys.readouterr().err == expected
    done = CliRunner().invoke(main, ["plugins"])
    assert done.exit_code == 1 and done.stderr == expected


def test_errors_as_one_line_escapes_any_message(capsys: pytest.CaptureFixture[str]) -> None:
    @errors_as_one_line
    def command() -> None:
        raise KeyError("a\nb")

    with pytest.raises(SystemExit) as exit_:
        command()
    assert exit_.value.code == 1
    assert capsys.readouterr().err == "vmdev: error: internal error: KeyError: 'a\\nb' (set VMDEV_DEBUG=1 for details)\n"


def test_the_cli_names_hostile_files_in_one_line_on_both_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], quiet_plugins: None
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    spec = tmp_path / "config.json"
    spec.write_text('{"linux": {}}')
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    attach = ["attach", "--state", str(tmp_path / "x.json"), "--hypervisor", "cloud-hypervisor"]
    cases = [
        (["plan", "--config", str(fifo), str(spec)], f"{fifo}: cannot read settings file: not a regular file (a FIFO)"),
        (["plan", str(fifo)], f"{fifo}: cannot read OCI spec: not a regular file (a FIFO)"),
        (["status", "--state", str(fifo)], f"{fifo}: cannot read the state file: not a regular file (a FIFO)"),
        (["status", "--state", str(deep)], f"{deep}: line 1: is not valid JSON: nested too deeply"),
        ([*attach, "--oci-device", f"@{fifo}"], f"{fifo}: --oci-device: cannot read: not a regular file (a FIFO)"),
        ([*attach[:2], str(deep), "--oci-device", ENTRY], f"{deep}: line 1: is not valid JSON: nested too deeply"),
    ]
    plain = 0
    for argv, message in cases:
        expected = (1, "", f"vmdev: error: {message}\n")
        capsys.readouterr()
        status = run_plain(argv)
        if status is not None:
            plain += 1
            out, err = capsys.readouterr()
            assert (status, out, err) == expected, argv
        done = CliRunner().invoke(main, argv)
        assert (done.exit_code, done.stdout, done.stderr) == expected, argv
    assert plain == 4  # plan and attach read their arguments without click; status is click's


def test_json_value_counts_levels_of_nesting_not_brackets() -> None:
    """A top-level container may hold MAX_JSON_DEPTH levels of containers nested in it."""
    levels = MAX_JSON_DEPTH + 1  # containers, the outermost included
    wide = "[" + ",".join(["[{}]"] * 500) + "]"  # 1,001 brackets, three levels
    assert len(json_value(wide)) == 500
    assert json_value("[" * levels + "]" * levels) is not None
    assert json_value('{"a": ' * levels + "1" + "}" * levels) is not None
    with pytest.raises(ValueError, match=f"nested more than {MAX_JSON_DEPTH} levels deep"):
        json_value("[" * (levels + 1) + "]" * (levels + 1))
    with pytest.raises(ValueError, match=f"nested more than {MAX_JSON_DEPTH} levels deep"):
        json_value('{"a": ' * (levels + 1) + "1" + "}" * (levels + 1))
