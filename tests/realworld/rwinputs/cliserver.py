"""Run the installed ``vmdev`` command line many times, fast: a fork server.

A real-world matrix is a thousand ``vmdev plan`` runs; a fresh interpreter costs ~0.3 s of CPU
each, nearly all of it imports. This server runs under the interpreter of the installed ``vmdev``
script (its shebang), imports the console script's entry point once (and the plugins' modules,
without loading any plugin), then forks one child per request. The child is a fresh ``vmdev``
process in every way that matters: its stdout and stderr are its own files, its argv is the
request's, it runs the same ``main`` the console script runs and exits with its status; plugins
load in the child, so plugin-loading warnings appear as they would. Python's own handling of an
uncaught exception (traceback on stderr, status 1) and of ``SystemExit`` is reproduced.

:class:`CliServer` (the client side, used by the tests) speaks JSON lines: a request is
``{"argv": [...]}``, the reply ``{"rc": N, "stdout": "...", "stderr": "..."}``. The tests compare
the server with a plain subprocess of the installed script for one combination per outcome, so a
difference between the two cannot go unnoticed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()


def interpreter_of(script: str) -> str:
    """The Python that runs an installed console script (from its ``#!`` line)."""
    first = Path(script).read_bytes().split(b"\n", 1)[0].decode()
    if not first.startswith("#!"):
        raise RuntimeError(f"{script} has no #! line; cannot tell which Python runs it")
    return first[2:].strip().split()[0]


class CliServer:
    """One fork server process; :meth:`run` is thread-safe (one request at a time)."""

    def __init__(self, vmdev: str, env: dict[str, str]) -> None:
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [interpreter_of(vmdev), str(SCRIPT), vmdev], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=env, bufsize=1,
        )

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        with self._lock:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._proc.stdin.write(json.dumps({"argv": argv}) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the vmdev fork server died (status {self._proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return int(reply["rc"]), str(reply["stdout"]), str(reply["stderr"])

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


# --- the server (runs under the installed vmdev's interpreter) -----------------------------------
def _entry_point(script: str) -> Any:
    from importlib.metadata import entry_points

    name = Path(script).name
    for ep in entry_points(group="console_scripts"):
        if ep.name == name:
            return ep.load()
    raise RuntimeError(f"no console script {name!r} is installed in {sys.prefix}")


def _preimport_plugins() -> None:
    """Import the plugin modules (not load them: the child's plugin manager does that)."""
    import importlib
    from importlib.metadata import entry_points

    for ep in entry_points(group="vmdev"):
        try:
            importlib.import_module(ep.module)
        except Exception:  # noqa: BLE001 - the child imports it again and reports the failure
            sys.modules.pop(ep.module, None)


def _exit_status(code: object) -> int:
    """What the interpreter does with ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _child(main: Any, script: str, argv: list[str], out: str, err: str) -> None:
    os.dup2(os.open(out, os.O_WRONLY | os.O_TRUNC), 1)
    os.dup2(os.open(err, os.O_WRONLY | os.O_TRUNC), 2)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False, errors="backslashreplace")  # noqa: SIM115
    sys.argv = [script, *argv]
    try:
        status = _exit_status(main())
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def serve(script: str) -> None:
    main = _entry_point(script)
    _preimport_plugins()
    with tempfile.TemporaryDirectory(prefix="vmdev-cliserver-") as tmp:
        out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        for line in sys.stdin:
            argv = list(json.loads(line)["argv"])
            for path in (out, err):
                Path(path).write_bytes(b"")
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(main, script, argv, out, err)
            _, status = os.waitpid(pid, 0)
            rc = os.waitstatus_to_exitcode(status)
            reply = {"rc": rc, "stdout": Path(out).read_text(errors="replace"),
                     "stderr": Path(err).read_text(errors="replace")}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    serve(sys.argv[1])
