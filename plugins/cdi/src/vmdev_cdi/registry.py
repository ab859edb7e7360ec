"""The registry of CDI devices over spec directories (the Go library's ``Cache``).

Spec directories are scanned in order; a directory's index is the priority of every spec in it,
so later directories win (by default ``/var/run/cdi`` over ``/etc/cdi``). Within a directory,
files are read in name order and only names ending in ``.json`` or ``.yaml`` count. The rules,
as in the reference:

* a file that fails to load contributes nothing and gets ``failed to load CDI Spec <error>``;
  the other files are unaffected. This holds for any failure: a FIFO, a file over
  :data:`vmdev_cdi.spec.MAX_SPEC_BYTES`, an alias bomb, or a Python error the decoder did not
  foresee (recorded with its name) all stay that file's error;
* a device defined by a later (higher-priority) directory overrides an earlier one;
* a device defined twice at the same priority is removed altogether, even if a higher-priority
  directory defines it too, and both files get ``conflicting device "..." (specs "...", "...")``;
* a missing directory is skipped; any other error reading a directory (not a directory,
  permission denied) silently stops the scan, later directories included.

The reference watches the directories with inotify and rescans on changes; here a registry is
scanned when it is made and again on :meth:`Registry.refresh` (vmdev plans are short-lived, and
the reference's own ``Refresh`` rescans unconditionally without a watcher).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from typing import Any

import attrs

from vmdev_cdi.constants import DEFAULT_DYNAMIC_DIR as DEFAULT_DYNAMIC_DIR
from vmdev_cdi.constants import DEFAULT_SPEC_DIRS as DEFAULT_SPEC_DIRS
from vmdev_cdi.constants import DEFAULT_STATIC_DIR as DEFAULT_STATIC_DIR
from vmdev_cdi.edits import StatFunc, apply_edits
from vmdev_cdi.errors import CDIError, OciSpecError, UnresolvableError
from vmdev_cdi.gotext import clean, ext, goquote, path_error
from vmdev_cdi.model import ContainerEdits, SpecDocument
from vmdev_cdi.spec import (
    DEFAULT_SPEC_EXT,
    SPEC_EXTS,
    CDIDevice,
    Spec,
    SpecValidator,
    encode_spec,
    new_spec,
    read_spec,
)


@attrs.frozen
class ScanEntry:
    """One spec file met while scanning: its path, priority and the spec or the error."""

    path: str
    priority: int
    spec: Spec | None
    error: str


def scan_spec_dirs(dirs: Sequence[str], validator: SpecValidator | None = None) -> Iterator[ScanEntry]:
    """Every ``.json``/``.yaml`` file of ``dirs``, read in the reference's order (Go's
    ``scanSpecDirs``)."""
    for priority, directory in enumerate(dirs):
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except FileNotFoundError:
            continue
        except OSError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) or ext(entry.name) not in SPEC_EXTS:
                continue
            path = os.path.join(directory, entry.name)
            try:
                yield ScanEntry(path, priority, read_spec(path, priority, validator), "")
            except CDIError as exc:
                yield ScanEntry(path, priority, None, exc.message)
            except OSError as exc:  # a dangling link, or gone since listing: Go's raw os error
                yield ScanEntry(path, priority, None, path_error("open", path, exc))
            except Exception as exc:  # noqa: BLE001 - one file's failure is that file's error, as in Go
                reason = f"vmdev-cdi cannot read it ({type(exc).__name__}: {exc})"
                yield ScanEntry(path, priority, None, f"failed to parse CDI Spec {goquote(path)}: {reason}")


class Registry:
    """The CDI devices of some spec directories (default ``/etc/cdi``, ``/var/run/cdi``).

    ``stat`` reads the host's device nodes when edits are applied (``os.lstat`` by default);
    ``validator`` checks every spec document first (see :class:`vmdev_cdi.schema.Schema`).
    """

    def __init__(
        self,
        spec_dirs: Iterable[str] | None = None,
        *,
        stat: StatFunc = os.lstat,
        validator: SpecValidator | None = None,
    ) -> None:
        dirs = list(spec_dirs or ())
        self.spec_dirs: tuple[str, ...] = tuple(clean(d) for d in dirs) if dirs else DEFAULT_SPEC_DIRS
        self.stat = stat
        self.validator = validator
        self._specs: dict[str, list[Spec]] = {}
        self._devices: dict[str, CDIDevice] = {}
        self._errors: dict[str, list[str]] = {}
        self.refresh()

    # --- scanning ----------------------------------------------------------------------------
    def refresh(self) -> dict[str, list[str]]:
        """Rescan every directory; the errors of this scan, by spec path (see :attr:`errors`)."""
        specs: dict[str, list[Spec]] = {}
        devices: dict[str, CDIDevice] = {}
        conflicts: set[str] = set()
        errors: dict[str, list[str]] = {}
        for entry in scan_spec_dirs(self.spec_dirs, self.validator):
            if entry.spec is None:
                errors.setdefault(entry.path, []).append("failed to load CDI Spec " + entry.error)
                continue
            spec = entry.spec
            specs.setdefault(spec.vendor, []).append(spec)
            for device in spec.devices.values():
                name = device.qualified_name
                other = devices.get(name)
                if other is not None and self._keeps_other(name, device, other, errors, conflicts):
                    continue
                devices[name] = device
        for name in conflicts:
            del devices[name]
        self._specs, self._devices, self._errors = specs, devices, errors
        return self.errors

    @staticmethod
    def _keeps_other(name: str, device: CDIDevice, other: CDIDevice, errors: dict[str, list[str]],
                     conflicts: set[str]) -> bool:
        if device.spec.priority > other.spec.priority:
            return False
        if device.spec.priority == other.spec.priority:
            text = (f"conflicting device {goquote(name)} (specs {goquote(device.spec.path)}, "
                    f"{goquote(other.spec.path)})")
            for path in (device.spec.path, other.spec.path):
                errors.setdefault(path, []).append(text)
            conflicts.add(name)
        return True

    @property
    def errors(self) -> dict[str, list[str]]:
        """The errors of the last scan, by spec file path, in scan order (Go's ``GetErrors``)."""
        return {path: list(found) for path, found in self._errors.items()}

    def error_text(self) -> str:
        """All errors joined with newlines, as the reference's ``Refresh`` returns them ("" if none)."""
        return "\n".join(text for found in self._errors.values() for text in found)

    def spec_errors(self, spec: Spec) -> list[str]:
        return list(self._errors.get(spec.path, ()))

    # --- queries -----------------------------------------------------------------------------
    def list_devices(self) -> list[str]:
        """Qualified names of every resolvable device, sorted."""
        return sorted(self._devices)

    def list_vendors(self) -> list[str]:
        return sorted(self._specs)

    def list_classes(self) -> list[str]:
        return sorted({spec.class_ for specs in self._specs.values() for spec in specs})

    def vendor_specs(self, vendor: str) -> list[Spec]:
        """The specs loaded for ``vendor``, in scan order (overridden ones included)."""
        return list(self._specs.get(vendor, ()))

    def specs(self) -> list[Spec]:
        """Every loaded spec, in scan order."""
        loaded = [spec for specs in self._specs.values() for spec in specs]
        return sorted(loaded, key=lambda s: (s.priority, s.path))

    def get_device(self, name: str) -> CDIDevice | None:
        """The device with exactly this qualified name (no normalisation)."""
        return self._devices.get(name)

    # --- injection ---------------------------------------------------------------------------
    def merged_edits(self, names: Iterable[str]) -> ContainerEdits:
        """The edits that injecting ``names`` applies: for each name in order, its spec's edits the
        first time a device of that spec is met, then the device's. Raises
        :class:`UnresolvableError` naming every name no loaded spec provides."""
        edits = ContainerEdits()
        seen: list[Spec] = []
        unresolved: list[str] = []
        for name in names:
            device = self._devices.get(name)
            if device is None:
                unresolved.append(name)
                continue
            if not any(spec is device.spec for spec in seen):
                seen.append(device.spec)
                edits = edits.append(device.spec.edits)
            edits = edits.append(device.edits)
        if unresolved:
            raise UnresolvableError(unresolved)
        return edits

    def inject_devices(self, oci: MutableMapping[str, Any] | None, names: Iterable[str]) -> None:
        """Inject the named devices into the OCI spec ``oci`` in place (Go's ``InjectDevices``).

        Nothing is changed when a name is unresolvable. A failure while applying is
        ``failed to inject devices: ...`` and may leave ``oci`` partly edited, as in the reference.
        """
        requested = list(names)
        if oci is None:
            raise UnresolvableError(requested, message="can't inject devices, nil OCI Spec")
        edits = self.merged_edits(requested)
        try:
            apply_edits(oci, edits, stat=self.stat)
        except OciSpecError as exc:  # keeps the JSON path; the device is the node, else the names
            raise OciSpecError(f"failed to inject devices: {exc.message}",
                               device=exc.device or ", ".join(requested), field=exc.field) from None
        except CDIError as exc:
            raise CDIError(f"failed to inject devices: {exc.message}") from None

    # --- writing -----------------------------------------------------------------------------
    def _spec_path(self, name: str) -> tuple[str, int]:
        if not self.spec_dirs:
            raise CDIError("no Spec directories to write to")
        priority = len(self.spec_dirs) - 1
        path = os.path.join(self.spec_dirs[priority], name)
        if ext(path) not in SPEC_EXTS:
            path += DEFAULT_SPEC_EXT
        return path, priority

    def write_spec(self, doc: SpecDocument, name: str) -> str:
        """Validate ``doc`` and write it as ``name`` into the highest-priority directory (YAML
        unless the name ends in ``.json``), atomically through a temporary file. Returns the path."""
        path, priority = self._spec_path(name)
        spec = new_spec(doc, path, priority, self.validator)
        write_spec_file(spec.raw, spec.path)
        return spec.path

    def remove_spec(self, name: str) -> None:
        """Remove the spec file ``name`` from the highest-priority directory (missing is fine)."""
        if not self.spec_dirs:
            raise CDIError("no Spec directories to remove from")
        path, _ = self._spec_path(name)
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def write_spec_file(doc: SpecDocument, path: str, *, overwrite: bool = True) -> None:
    """Write ``doc`` to ``path`` as Go's ``Spec.write`` does (``spec.*.tmp`` renamed over it)."""
    import tempfile

    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    data = encode_spec(doc, path)
    fd, tmp = tempfile.mkstemp(prefix="spec.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if not overwrite and os.path.lexists(path):
            raise CDIError(f"failed to write Spec file: {path}: {os.strerror(errno.EEXIST).lower()}")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def inject(
    oci: MutableMapping[str, Any],
    names: Iterable[str],
    *,
    spec_dirs: Iterable[str] | None = None,
    stat: StatFunc = os.lstat,
) -> MutableMapping[str, Any]:
    """Inject the named CDI devices from ``spec_dirs`` into the OCI spec ``oci`` (in place; returned)."""
    Registry(spec_dirs, stat=stat).inject_devices(oci, names)
    return oci
