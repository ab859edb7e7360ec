"""A synchronous facade over qemu.qmp's async ``QMPClient`` for use from tests.

Only the async API of ``qemu.qmp`` is used (never ``qemu.qmp.legacy``). Each session owns a
private event loop running in a daemon thread; calls are submitted to it and waited for with a
timeout. QMP events are collected from connection time on, so none is missed between a command
and the wait for its event. ``qemu.qmp`` is imported lazily so that the rest of the package (e.g.
the kernel pre-fetch) works with a bare system python3.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import PIP_HINT, GuestError, GuestTimeoutError, QMPCommandError, RigSetupError

if TYPE_CHECKING:
    from qemu.qmp import EventListener, QMPClient

T = TypeVar("T")
Event = dict[str, Any]


def require_qmp() -> None:
    """Raise RigSetupError if the ``qemu.qmp`` package is not importable."""
    try:
        import qemu.qmp  # noqa: F401
    except ImportError as exc:
        raise RigSetupError(
            f"The Python package qemu.qmp is not importable ({exc}). The rig drives QEMU's QMP "
            f"monitor with it. Fix: `{PIP_HINT}` in the environment that runs pytest."
        ) from exc


def event_matches(event: Event, name: str, match: Mapping[str, Any] | None) -> bool:
    """True if ``event`` is called ``name`` and its data contains every item of ``match``."""
    if event.get("event") != name:
        return False
    data = event.get("data") or {}
    return all(data.get(key) == value for key, value in (match or {}).items())


class QMPSession:
    """One QMP connection, usable synchronously from any thread."""

    def __init__(self, name: str = "vmdev-rig") -> None:
        require_qmp()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"{name}-qmp", daemon=True
        )
        self._thread.start()
        self._events: list[Event] = []
        self._taken: set[int] = set()
        self._cond = threading.Condition()
        self._closed = False
        try:
            self._client, self._pump = self._call(self._setup(name), 10.0, "setup")
        except BaseException:
            self._stop_loop()
            raise

    async def _setup(self, name: str) -> tuple[QMPClient, asyncio.Task[None]]:
        from qemu.qmp import EventListener, QMPClient

        client = QMPClient(name)
        listener = EventListener()  # all events
        client.register_listener(listener)
        return client, asyncio.get_running_loop().create_task(self._collect(listener))

    async def _collect(self, listener: EventListener) -> None:
        async for message in listener:
            with self._cond:
                self._events.append(dict(message))
                self._cond.notify_all()

    def try_connect(self, socket_path: Path, timeout: float = 5.0) -> bool:
        """Connect to a UNIX socket; False if the server is not (yet) accepting."""
        from qemu.qmp import ConnectError

        try:
            self._call(self._client.connect(str(socket_path)), timeout, "connect")
        except ConnectError:
            return False
        return True

    def execute(
        self, command: str, arguments: Mapping[str, object] | None = None, timeout: float = 30.0
    ) -> Any:
        """Run one QMP command and return its ``return`` payload; QMPCommandError on error."""
        from qemu.qmp import ExecuteError, QMPError

        try:
            return self._call(self._client.execute(command, arguments), timeout, command)
        except ExecuteError as exc:
            raise QMPCommandError(command, exc.error_class, str(exc)) from exc
        except (QMPError, EOFError, OSError) as exc:
            raise GuestError(
                f"QMP {command}: connection failed ({type(exc).__name__}: {exc})"
            ) from exc

    def events(self) -> list[Event]:
        """Every event received so far, oldest first."""
        with self._cond:
            return list(self._events)

    def wait_event(
        self, name: str, timeout: float = 30.0, match: Mapping[str, Any] | None = None
    ) -> Event:
        """The oldest not yet returned event ``name`` whose data contains ``match``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, event in enumerate(self._events):
                    if index not in self._taken and event_matches(event, name, match):
                        self._taken.add(index)
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = ", ".join(str(e.get("event")) for e in self._events) or "none"
                    raise GuestTimeoutError(
                        f"no QMP event {name} matching {match or {}} within "
                        f"{timeout:.0f} s (events seen: {seen})"
                    )
                self._cond.wait(remaining)

    def close(self) -> None:
        """Disconnect and stop the private event loop (idempotent, never raises)."""
        if self._closed:
            return
        self._closed = True
        try:
            with contextlib.suppress(Exception):  # best-effort cleanup
                self._call(self._shutdown(), 10.0, "disconnect")
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        if not self._thread.is_alive():
            self._loop.close()

    async def _shutdown(self) -> None:
        with contextlib.suppress(Exception):  # EOFError etc. after QEMU quit
            await self._client.disconnect()
        self._pump.cancel()
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self._loop)
        try:
            return future.result(timeout + 5.0)
        except (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError) as exc:
            future.cancel()  # (three distinct classes before Python 3.11)
            raise GuestTimeoutError(f"QMP {what}: no answer within {timeout:.0f} s") from exc
