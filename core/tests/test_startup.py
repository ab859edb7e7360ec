"""Start-up (issue 13): a runtime runs ``vmdev plan`` on every container start.

A plain ``vmdev plan`` loads only what planning needs (no email parser, zip or temporary files,
TOML, asyncio, QEMU's QMP library, click, cattrs, logging, hashlib) and reads no distribution's
METADATA; and the commands read without click print exactly what click's commands print.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vmdev.cli import main, run_plain
from vmdev.plugins import shared_manager
from vmdev.state import StateFile

#: runs the command line the way the console script does, then reports what it loaded and opened
PROBE = textwrap.dedent("""
    import json, os, sys
    opened = []

    def audit(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes)):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(audit)
    sys.argv = ["vmdev", *sys.argv[1:]]
    from vmdev.cli import main
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    print(json.dumps({"code": code, "modules": sorted(sys.modules), "opened": opened}), file=sys.stderr)
""")
#: what a plan without --config has no use for (the issue's list, and what the core keeps out)
UNNEEDED = ("email", "zipp", "tempfile", "shutil", "asyncio", "qemu", "click", "cattrs", "importlib_metadata",
            "logging", "hashlib")


#: runs vmdev as the installed ``vmdev`` script does (vmdev.cli:console)
CONSOLE = "import sys\nsys.argv = ['vmdev', *sys.argv[1:]]\nfrom vmdev.cli import console\nconsole()\n"
#: in-process, as a program embedding the command line does (SystemExit)
IN_PROCESS = "import sys\nsys.argv = ['vmdev', *sys.argv[1:]]\nfrom vmdev.cli import main\nmain()\n"


def run_probe(tmp_path: Path, *args: str, plugins: str | None = "") -> dict[str, Any]:
    """``plugins``: VMDEV_PLUGINS (by default none: the modules are the core's to answer for; None:
    every installed plugin)."""
    env = {k: v for k, v in os.environ.items() if k != "VMDEV_PLUGINS"}
    if plugins is not None:
        env["VMDEV_PLUGINS"] = plugins
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env,
                          check=False)
    report: dict[str, Any] = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, done.stderr
    return report


@pytest.fixture
def one_device(tmp_path: Path) -> list[str]:
    sysfs = tmp_path / "sys"
    (sysfs / "dev/char/1:3").mkdir(parents=True)
    (sysfs / "dev/char/1:3/uevent").write_text("MAJOR=1\nMINOR=3\nDEVNAME=null\n")
    spec = tmp_path / "config.json"
    spec.write_text(json.dumps({"linux": {"devices": [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]}}))
    return ["--sysfs-root", str(sysfs), str(spec)]


def test_a_plain_plan_loads_no_module_it_has_no_use_for_and_reads_no_metadata(
    tmp_path: Path, one_device: list[str]
) -> None:
    report = run_probe(tmp_path, "plan", "--format", "json", *one_device)
    loaded = {name.split(".")[0] for name in report["modules"]}
    assert sorted(loaded & set(UNNEEDED)) == []
    # a running VM's ports are for hot plug only, and devices that take no port need no topology
    assert [m for m in report["modules"] if m.startswith(("vmdev.pcie", "vmdev.backends.qemu_"))] == []
    every_plugin = run_probe(tmp_path, "plan", *one_device, plugins=None)["opened"]
    assert [p for p in every_plugin if os.path.basename(p) in ("METADATA", "PKG-INFO")] == []
    assert any(p.endswith(".dist-info/entry_points.txt") for p in every_plugin)  # it did look


def test_a_plain_plan_loads_no_toml_parser(tmp_path: Path, one_device: list[str]) -> None:
    report = run_probe(tmp_path, "plan", *one_device)
    assert "tomllib" not in report["modules"] and "tomli" not in report["modules"]


def test_attaching_a_generic_device_loads_neither_the_qmp_client_the_sharing_rules_nor_the_pcie_topology(
    tmp_path: Path, one_device: list[str]
) -> None:
    """A device that stays in the container needs no word with QEMU, shares no VM object and takes
    no port (issue 13): the QMP socket given does not even exist."""
    sandbox = ["--state", str(tmp_path / "state.json"), "--qmp", str(tmp_path / "qmp.sock")]
    device = ["--sysfs-root", one_device[1], "--type", "c", "--major", "1", "--minor", "3", "/dev/null"]
    for command in ("attach", "detach"):
        modules = run_probe(tmp_path, command, *sandbox, *device)["modules"]
        assert [m for m in modules if m in ("socket", "vmdev.sharing", "logging", "vmdev.pcie", "vmdev.qmp")] == [], command
    assert StateFile(tmp_path / "state.json").load().devices == ()  # attached, then detached


def test_import_vmdev_cli_loads_neither_click_nor_plugins() -> None:
    code = ("import sys\nimport vmdev.cli\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'click' or m == 'vmdev.plugins'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# --- the plain path prints what click's commands print -------------------------------------------------
FLAGS = """
from vmdev import hookimpl
from vmdev.declared import BOOLEAN, INTEGER, STRING, STRINGS, Setting


@hookimpl
def register_settings(register):
    register(Setting(name="widget_mode", type=STRING, default="a", description="m", flag="--widget-mode"))
    register(Setting(name="widget_count", type=INTEGER, default=1, description="n", flag="--widget-count",
                     minimum=0))
    register(Setting(name="widget_on", type=BOOLEAN, default=False, description="o", flag="--widget-on",
                     flag_sets={"widget_mode": "b"}))
    register(Setting(name="widget_tags", type=STRINGS, default=(), description="t", flag="--widget-tag"))


@hookimpl
def finish_plan(settings):
    return {"widgets": {key: settings.value(key) for key in
                        ("widget_mode", "widget_count", "widget_on", "widget_tags")}}
"""


@pytest.fixture
def both(make_dist: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """``both(*argv)``: the plain path's (status, stdout, stderr), or None if it leaves the arguments
    to click; click's answer must then be the same."""
    make_dist("widget-flags", {"widgets": "widget_flags_mod"}, {"widget_flags_mod": FLAGS})
    monkeypatch.setenv("VMDEV_PLUGINS", "widget-flags")

    def run(*argv: str) -> tuple[int, str, str] | None:
        capsys.readouterr()
        with shared_manager():
            status = run_plain(list(argv))
        out, err = capsys.readouterr()
        result = CliRunner().invoke(main, list(argv))
        if status is not None:
            assert (status, out, err) == (result.exit_code, result.stdout, result.stderr), argv
            return status, out, err
        return None

    return run


def test_plain_plans_are_click_s_plans(both: Any, one_device: list[str], tmp_path: Path) -> None:
    sysfs, spec = one_device[1], one_device[2]
    cases = [
        [spec], ["--format", "json", spec], ["--format=json", "--memory=256", "--hotplug", spec],
        [spec, "--coldplug", "--machine-type", "pc"], ["--", spec], ["--sysfs-root", sysfs, spec],
        ["--widget-tag", "x", "--widget-on", "--widget-tag", "y", "--widget-count", "5", spec],
        ["--no-widget-on", "--widget-on", "--no-widget-on", "--widget-mode", "c", spec],
        ["--widget-on", "--widget-mode", "c", spec], ["--widget-mode=c", "--widget-on", spec],
        ["--hypervisor", "firecracker", "--widget-count=3", spec],
    ]
    for args in cases:
        done = both("plan", *args)
        assert done is not None and done[0] == 0, args
    widgets = json.loads(both("plan", "--widget-on", "--widget-tag", "x", spec)[1])["widgets"]
    assert widgets == {"widget_mode": "b", "widget_count": 1, "widget_on": True, "widget_tags": ["x"]}


def test_plain_plan_errors_are_click_s_errors(both: Any, one_device: list[str], tmp_path: Path) -> None:
    spec, broken = one_device[2], tmp_path / "broken.json"
    broken.write_text('{"linux": {"devices": [{"path": "/dev/null", "type": "c", "major": 1}]}}')
    for args in ([str(tmp_path / "missing.json")], ["--hypervisor", "nope", spec], [str(broken)],
                 ["--widget-count", "-3", spec]):
        done = both("plan", *args)
        assert done is not None and done[0] == 1 and done[2].startswith("vmdev: error: "), args


def test_anything_unusual_is_left_to_click(both: Any, one_device: list[str], tmp_path: Path) -> None:
    spec = one_device[2]
    for argv in (["plan"], ["plan", "-h"], ["plan", "--help"], ["plan", spec, spec], ["plan", "--bogus", spec],
                 ["plan", "--format", "text", spec], ["plan", "--format", "JSON", spec], ["plan", "--memory", "0", spec],
                 ["plan", "--memory", "x", spec], ["plan", "--widget-count", "x", spec], ["plan", "--hotplug=1", spec],
                 ["plan", "--sysfs-root", spec, spec], ["plan", str(tmp_path)], ["plan", spec, "--machine-type"],
                 ["plan", "--state", str(tmp_path), spec],
                 ["resolve", "--major", "1", "--minor", "3", "/dev/null"], ["resolve", "--type", "x", "/dev/x"],
                 ["plugins", "--bogus"], ["backends"], ["--help", "plan"], []):
        assert both(*argv) is None, argv


def test_plain_resolve_and_plugins_are_click_s(both: Any, one_device: list[str]) -> None:
    sysfs = one_device[1]
    device = ["--type", "c", "--major", "1", "--minor", "3", "--sysfs-root", sysfs, "/dev/null"]
    assert both("resolve", *device) == (0, "/dev/null\n", "")
    assert both("resolve", "--json", *device, "--widget-on")[1] == '{"host_path": "/dev/null"}\n'
    assert both("resolve", "--type", "b", "--major", "-1", "--minor", "0", "--host-path", "/i.raw", "/dev/x")[1] == \
        "/i.raw\n"
    assert both("resolve", "--type", "b", "--major", "8", "--minor", "16", "--sysfs-root", sysfs, "/dev/x")[0] == 1
    assert "widgets  (widget-flags 1.0)" in both("plugins")[1]
    assert json.loads(both("plugins", "--json")[1])[-1]["name"] == "widgets"


# --- attach and detach: the plain path prints what click's commands print, and changes the same -------
@pytest.fixture
def sandboxes(make_dist: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
              tmp_path: Path) -> Any:
    """``run(*argv)``: ``vmdev attach|detach`` on two sandboxes that had the same commands so far, one
    through the plain path, one through click (``{state}`` in ``argv`` names each one's state file):
    both must answer alike (their paths aside) and leave the same state; the plain answer, or None
    when the plain path leaves the arguments to click."""
    make_dist("widget-flags", {"widgets": "widget_flags_mod"}, {"widget_flags_mod": FLAGS})
    monkeypatch.setenv("VMDEV_PLUGINS", "widget-flags")
    plain_state, click_state = tmp_path / "plain.json", tmp_path / "click.json"

    def run(*argv: str) -> tuple[int, str, str] | None:
        capsys.readouterr()
        with shared_manager():
            status = run_plain([a.replace("{state}", str(plain_state)) for a in argv])
        out, err = capsys.readouterr()
        result = CliRunner().invoke(main, [a.replace("{state}", str(click_state)) for a in argv])
        if status is None:
            return None
        same = (result.exit_code, untimed(result.stdout), result.stderr.replace(str(click_state), str(plain_state)))
        assert (status, untimed(out), err) == same, argv
        if plain_state.exists():  # the same state, but for when each change happened
            assert untimed(plain_state) == untimed(click_state), argv
        return status, out, err

    return run


def untimed(text: str | Path) -> str:
    """``text`` (or the file's) with every ``since`` time the same."""
    return re.sub(r'"since": ?[0-9.e+-]+', '"since":0', text if isinstance(text, str) else text.read_text())


def test_plain_attach_and_detach_are_click_s(sandboxes: Any, one_device: list[str]) -> None:
    sysfs = one_device[1]
    null = ["--type", "c", "--major", "1", "--minor", "3", "--sysfs-root", sysfs, "/dev/null"]
    books = ["--state", "{state}", "--hypervisor", "cloud-hypervisor"]
    first = sandboxes("attach", *books, "--container", "c1", "--widget-on", *null)
    assert first[0] == 0 and first[1].startswith("attached generic-"), first
    assert sandboxes("attach", "--state={state}", "--container=c2", "--timeout", "5", *null)[0] == 0
    shown = json.loads(sandboxes("attach", "--state", "{state}", "--json", "--oci-device",
                                 '{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}',
                                 "--sysfs-root", sysfs)[1])
    assert shown["device"]["attach_count"] == 3 and shown["plugged"] is False
    assert sandboxes("detach", "--state", "{state}", "--container", "c1", *null)[0] == 0
    assert sandboxes("detach", "--state", "{state}", "--id", shown["id"], "--container", "c2")[0] == 0
    last = sandboxes("detach", "--state", "{state}", "--id", shown["id"], "--json")
    assert last[0] == 0 and json.loads(last[1])["device"] is None


def test_plain_attach_and_detach_errors_are_click_s(sandboxes: Any, one_device: list[str], tmp_path: Path) -> None:
    sysfs = one_device[1]
    for argv in (
        ["detach", "--state", "{state}", "--id", "generic-0"],  # no state file yet
        ["attach", "--state", "{state}", "--hypervisor", "nope", "--type", "c", "--major", "1", "--minor", "3",
         "/dev/null"],
        ["attach", "--state", "{state}", "--sandbox-device", "rng", "--oci-device", "{}"],
        ["attach", "--state", "{state}", "--oci-device", "{not json"],
        ["attach", "--state", "{state}", "--hypervisor", "cloud-hypervisor", "--type", "c", "--major", "1",
         "--minor", "3", "--sysfs-root", sysfs, "--qmp", str(tmp_path / "qmp.sock"), "/dev/null"],
    ):
        done = sandboxes(*argv)
        assert done is not None and done[0] == 1 and done[2].startswith("vmdev: error: "), argv
        assert done[2].count("\n") == 1, argv


def test_unusual_attach_and_detach_arguments_are_left_to_click(sandboxes: Any, tmp_path: Path) -> None:
    for argv in (["attach"], ["attach", "--help"], ["detach", "-h"], ["attach", "--id", "x", "--state", "{state}"],
                 ["attach", "--state", "{state}", "--timeout", "0"], ["attach", "--state", "{state}", "--type", "x"],
                 ["attach", "--state", "{state}", "--memory", "0"], ["attach", "--state", "{state}", "a", "b"],
                 ["detach", "--state", "{state}", "--major", "x"], ["attach", "--state", str(tmp_path)],
                 ["attach", "--state", "{state}", "--json=1"]):
        assert sandboxes(*argv) is None, argv


def test_the_plain_path_knows_exactly_the_options_of_click_s_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plain path keeps its own option tables (reading them with click is what it avoids):
    they must name the very options of the click commands, or one side would drift silently."""
    import click

    import vmdev.cli
    from vmdev import sandbox_cli

    monkeypatch.setenv("VMDEV_PLUGINS", "")
    tables = {"plan": vmdev.cli._PLAN_OPTIONS, "resolve": vmdev.cli._RESOLVE_OPTIONS,
              "attach": vmdev.cli._SANDBOX_OPTIONS, "detach": {**vmdev.cli._SANDBOX_OPTIONS, "--id": None}}
    commands = {"plan": vmdev.cli.plan_cmd, "resolve": vmdev.cli.resolve_cmd, "attach": sandbox_cli.attach_cmd,
                "detach": sandbox_cli.detach_cmd}
    live = set(vmdev.cli._live_options())
    for name, command in commands.items():
        with shared_manager(), click.Context(command) as ctx:
            flags = {opt for param in command.get_params(ctx) if isinstance(param, click.Option)
                     for opt in (*param.opts, *param.secondary_opts)}
        assert flags - {"--help", "-h"} - live == set(tables[name]), name


# --- vmdev --help: printed without click, as click prints it ------------------------------------------
#: ``vmdev --help`` the console script's way (plain) or click's, reporting its exit status and click's import
HELP_PROBE = textwrap.dedent("""
    import json, os, sys
    by_click = sys.argv[1] == "click"
    sys.argv = [os.environ.get("PROBE_PROGRAM", "/usr/bin/vmdev"), *sys.argv[2:]]
    from vmdev import cli
    code = 0
    try:
        if by_click:
            cli._group().main(sys.argv[1:], prog_name=os.path.basename(sys.argv[0]))
        else:
            cli.main()
    except SystemExit as exc:
        code = exc.code
    print(json.dumps({"code": code, "click": "click" in sys.modules}), file=sys.stderr)
""")
LONG_COMMAND = """
from vmdev import hookimpl
from vmdev.commands import CommandSpec


@hookimpl
def register_lazy_commands(register):
    register(CommandSpec(name="inspect-every-widget-of-the-sandbox", target="nowhere:command",
                         summary="Inspect every widget of the sandbox, one by one, and say what each of them "
                                 "holds. Then stop."))
    register(CommandSpec(name="w", target="nowhere:other", summary="W."))
    register(CommandSpec(name="specs", target="nowhere:specs", summary="List the specs, e.g. the CDI ones. Then more."))
    register(CommandSpec(name="cafe", target="nowhere:cafe", summary="Check the café."))
"""
CLICK_COMMAND = '''
import click
from vmdev import hookimpl


@hookimpl
def register_commands(cli):
    @cli.command("by-hand")
    def by_hand():
        """Added the old way, with click."""
'''
STYLED = """
from vmdev import hookimpl
from vmdev.commands import CommandSpec


@hookimpl
def register_lazy_commands(register):
    register(CommandSpec(name="inspect-styled", target="nowhere:command",
                         summary="\\x1b[1mInspect\\x1b[0m every widget of the sandbox, one by one. Then stop."))
"""


def vmdev_help(way: str, columns: str, plugins: str | None, site: Path, *args: str,
               program: str = "/usr/bin/vmdev") -> tuple[str, dict[str, Any]]:
    """``plugins``: VMDEV_PLUGINS, the distributions of ``site`` among them; None: the installed ones only."""
    env = {k: v for k, v in os.environ.items() if k not in ("VMDEV_PLUGINS", "COLUMNS")}
    env.update({"COLUMNS": columns} if columns else {}, PROBE_PROGRAM=program)
    if plugins is not None:
        env["VMDEV_PLUGINS"] = plugins
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(site), env.get("PYTHONPATH"))))
    done = subprocess.run([sys.executable, "-c", HELP_PROBE, way, *args], capture_output=True, text=True, env=env,
                          check=False, stdin=subprocess.DEVNULL)
    return done.stdout, json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("columns", ["", "20", "57", "80", "200"])
@pytest.mark.parametrize("plugins", ["", None, "long-names", "long-names,styled"],
                         ids=["core", "installed", "long", "styled"])
def test_vmdev_help_is_click_s_help_without_click(make_dist: Any, columns: str, plugins: str | None) -> None:
    site = make_dist("long-names", {"long": "long_names_mod"}, {"long_names_mod": LONG_COMMAND})
    make_dist("styled", {"styled": "styled_mod"}, {"styled_mod": STYLED})
    for flag in ("--help", "-h"):
        plain, plain_report = vmdev_help("plain", columns, plugins, site, flag)
        by_click, click_report = vmdev_help("click", columns, plugins, site, flag)
        assert plain == by_click and plain_report["code"] == click_report["code"] == 0
        if "styled" not in (plugins or ""):  # escape sequences are click's to lay out (and to strip)
            assert not plain_report["click"]
    assert "plan " in plain and "Show this message and exit." in plain
    if plugins == "long-names":
        assert "inspect-every-widget-of-the-sandbox\n" in plain and "  w " in plain
        if columns in ("", "80", "200"):  # a period before a lower-case word ends no sentence
            assert "List the specs, e.g. the CDI ones.\n" in plain


def test_vmdev_help_on_an_ascii_stdout_is_click_s(make_dist: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """click rewraps a stdout that cannot write the text; the plain path leaves such a one to it."""
    site = make_dist("long-names", {"long": "long_names_mod"}, {"long_names_mod": LONG_COMMAND})
    monkeypatch.setenv("PYTHONIOENCODING", "ascii")
    plain, report = vmdev_help("plain", "", "long-names", site, "--help")
    assert report == {"code": 0, "click": True} and "Check the caf" in plain
    assert plain == vmdev_help("click", "", "long-names", site, "--help")[0]


def test_vmdev_help_is_click_s_while_a_plugin_adds_commands_by_hand(make_dist: Any) -> None:
    site = make_dist("by-hand", {"by_hand": "by_hand_mod"}, {"by_hand_mod": CLICK_COMMAND})
    plain, report = vmdev_help("plain", "", "by-hand", site, "--help")
    assert report == {"code": 0, "click": True}
    assert "  by-hand   Added the old way, with click." in plain
    assert plain == vmdev_help("click", "", "by-hand", site, "--help")[0]


@pytest.mark.parametrize("program", ["/opt/kata/libexec/vmdev-for-the-kata-runtime-of-this-host", "vm dev"])
def test_vmdev_help_under_another_program_name_is_click_s(make_dist: Any, program: str) -> None:
    site = make_dist("long-names", {"long": "long_names_mod"}, {"long_names_mod": LONG_COMMAND})
    for columns in ("20", "80"):
        plain, report = vmdev_help("plain", columns, "long-names", site, "--help", program=program)
        assert plain == vmdev_help("click", columns, "long-names", site, "--help", program=program)[0]
        too_narrow = columns == "20" and "kata" in program  # for the name and 20 columns on one line
        assert report == {"code": 0, "click": too_narrow}
        assert plain.startswith(f"Usage: {os.path.basename(program)} ")


# --- the collector: off for plain commands, on for what click runs -------------------------------------
GC_WATCH = '''
import gc

import click
from vmdev import hookimpl
from vmdev.commands import CommandSpec


@hookimpl
def finish_plan(settings):
    return {"collector": {"enabled": gc.isenabled()}}


@hookimpl
def register_lazy_commands(register):
    register(CommandSpec(name="collector", target="gc_watch_mod:collector", summary="Say if it runs."))


@click.command("collector")
def collector():
    """Say if it runs."""
    click.echo(f"enabled {gc.isenabled()}")
'''


def test_plain_commands_run_without_the_cyclic_collector_and_click_s_commands_with_it(
    make_dist: Any, one_device: list[str]
) -> None:
    """A plain command is short-lived (issue 13: the collector cost ~4 ms of a plan, its last pass at
    exit ~7 ms); a plugin's command may run for long and must keep it."""
    site = make_dist("gc-watch", {"gc_watch": "gc_watch_mod"}, {"gc_watch_mod": GC_WATCH})
    env = {**{k: v for k, v in os.environ.items() if k != "VMDEV_PLUGINS"}, "VMDEV_PLUGINS": "gc-watch",
           "PYTHONPATH": os.pathsep.join(filter(None, (str(site), os.environ.get("PYTHONPATH"))))}

    def vmdev(*args: str) -> str:
        done = subprocess.run([sys.executable, "-c", IN_PROCESS, *args], capture_output=True, text=True,
                              env=env, check=True)
        return done.stdout

    assert json.loads(vmdev("plan", *one_device))["collector"] == {"enabled": False}
    assert json.loads(vmdev("plan", "--format", "json", *one_device))["collector"] == {"enabled": False}
    assert vmdev("collector") == "enabled True\n"
    assert json.loads(vmdev("plan", "--format", "text", *one_device).split("collector:\n")[1]) == {"enabled": True}


@pytest.mark.parametrize("entry", [IN_PROCESS, CONSOLE], ids=["main", "console script"])
@pytest.mark.parametrize("args", [["plugins"], ["--help"], ["backends"], ["plugins", "--bogus-is-click-s"]],
                         ids=["plain", "plain help", "click", "click usage error"])
def test_output_into_a_closed_pipe_ends_quietly_as_click_ends_it(args: list[str], entry: str) -> None:
    """``vmdev plugins | grep -q block``: the reader has gone; that is no internal error to print."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-c", entry, *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, check=False)
    finally:
        os.close(write_end)
    if args[-1].startswith("--bogus"):  # the usage error goes to stderr, which is open
        assert done.returncode == 2 and "No such option" in done.stderr
        return
    assert (done.returncode, done.stderr) == (1, "")


# --- the console script: a plain command leaves without the interpreter's teardown -------------------
EXIT_WATCH = '''
import atexit, os, threading, time
from vmdev import hookimpl


def mark(text):
    with open(os.environ["EXIT_WATCH_MARK"], "w") as out:
        out.write(text)


def later():
    time.sleep(0.3)
    mark("the thread finished")


@hookimpl
def finish_plan(settings):
    if os.environ.get("EXIT_WATCH") == "atexit":
        atexit.register(mark, "the handler ran")
    elif os.environ.get("EXIT_WATCH") == "thread":
        threading.Thread(target=later).start()
    return None
'''


def run_vmdev(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          check=False)


#: the console script, with the plain path's writes left in the buffers (the plain commands flush as
#: they write; the exit must flush what any later writer leaves there)
UNFLUSHED_CONSOLE = CONSOLE.replace("from vmdev.cli import console\n", (
    "import vmdev.cli\n"
    "vmdev.cli._echo = lambda text, err=False: (sys.stderr if err else sys.stdout).write(text + '\\n')\n"
    "from vmdev.cli import console\n"))


def test_the_console_script_s_plain_plan_ends_with_all_its_output_and_status(one_device: list[str],
                                                                             tmp_path: Path) -> None:
    """Skipping the teardown must not skip the flush: into a pipe, stdout is block-buffered (unless
    PYTHONUNBUFFERED), so unflushed output would be lost."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    console, in_process = run_vmdev(CONSOLE, "plan", *one_device), run_vmdev(IN_PROCESS, "plan", *one_device)
    assert (console.returncode, console.stderr) == (0, "") and console.stdout
    assert console.stdout == in_process.stdout
    unflushed = run_vmdev(UNFLUSHED_CONSOLE, "plan", *one_device, env=env)
    assert (unflushed.returncode, unflushed.stdout) == (0, console.stdout)
    missing = run_vmdev(CONSOLE, "plan", str(tmp_path / "missing.json"))
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.count("\n") == 1 and "cannot read OCI spec" in missing.stderr
    same = run_vmdev(IN_PROCESS, "plan", str(tmp_path / "missing.json"))
    assert (same.returncode, same.stderr) == (missing.returncode, missing.stderr)


@pytest.mark.parametrize(("watch", "marked"), [("atexit", "the handler ran"), ("thread", "the thread finished")])
def test_the_console_script_leaves_as_python_does_while_a_plugin_left_work_for_exit(
    make_dist: Any, one_device: list[str], tmp_path: Path, watch: str, marked: str
) -> None:
    """An ``atexit`` handler or a running thread a plugin left behind: Python's own exit, which
    runs the one and waits for the other."""
    site = make_dist("exit-watch", {"exit_watch": "exit_watch_mod"}, {"exit_watch_mod": EXIT_WATCH})
    mark = tmp_path / "mark"
    env = {**{k: v for k, v in os.environ.items() if k != "VMDEV_PLUGINS"}, "VMDEV_PLUGINS": "exit-watch",
           "EXIT_WATCH": watch, "EXIT_WATCH_MARK": str(mark),
           "PYTHONPATH": os.pathsep.join(filter(None, (str(site), os.environ.get("PYTHONPATH"))))}
    done = run_vmdev(CONSOLE, "plan", *one_device, env=env)
    assert done.returncode == 0, done.stderr
    assert mark.read_text() == marked
    assert done.stderr == ""


@pytest.mark.parametrize("command", [["plan"], ["settings"]])  # the plain path and click's
def test_a_plugin_that_fails_to_load_is_one_line_on_the_console_s_stderr(
    make_dist: Any, one_device: list[str], command: list[str]
) -> None:
    site = make_dist("broken-dist", {"broken": "no_such_module_anywhere"}, {})
    env = {**{k: v for k, v in os.environ.items() if k != "VMDEV_PLUGINS"}, "VMDEV_PLUGINS": "broken-dist",
           "PYTHONPATH": os.pathsep.join(filter(None, (str(site), os.environ.get("PYTHONPATH"))))}
    done = run_vmdev(CONSOLE, *command, *(one_device if command == ["plan"] else []), env=env)
    assert done.returncode == 0 and done.stdout
    assert done.stderr == ("vmdev plugin 'broken' from distribution 'broken-dist' failed to load and is skipped: "
                           "ModuleNotFoundError: No module named 'no_such_module_anywhere'\n")
