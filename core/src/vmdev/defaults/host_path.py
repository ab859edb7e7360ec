"""Default host-path resolution: Kata's ``GetHostPath`` (its store branch is a family plugin's).

1. An empty container path is an error.
2. Major ``-1`` (a regular file used as a disk) returns the given host path.
3. ``c``/``u`` devices are looked up under ``<sysfs>/dev/char``, ``b`` under
   ``<sysfs>/dev/block``, as ``MAJ:MIN/uevent``; ``DEVNAME`` gives ``/dev/<DEVNAME>``.
4. No uevent file: for character devices and FIFOs (which stay in the container) the container
   path, as Kata does; for a block device an error, unlike Kata (whose fallback attaches whatever
   host file sits at the container path). The planner then checks that a resolved device node
   has the requested type and numbers (:func:`vmdev.host.check_node`).
5. A malformed uevent, or one without ``DEVNAME``, is an error naming the file.
"""

from __future__ import annotations

import json
import posixpath

from vmdev.errors import ResolveError
from vmdev.hookspecs import hookimpl
from vmdev.host import HostContext, decode_text, read_regular
from vmdev.models import DeviceInfo

_SYS_DEV_KIND = {"c": "char", "u": "char", "b": "block"}


#: what trimming removes around keys and values: ASCII blanks only (Python's ``str.strip`` and
#: ``splitlines`` also take U+2028, U+0085 and friends, which would cut a name short silently)
_BLANKS = " \t\r\v\f"


def parse_uevent(text: str, *, source: str, device: str) -> dict[str, str]:
    """Parse a uevent file the way Kata's go-ini does (``KEY=VALUE``; ``:`` also separates).

    Lines end at ``\n`` (what the kernel writes); blank lines and ``#``/``;`` comments are
    skipped; values are trimmed of ASCII blanks, cut at an inline ``#``/``;`` and unquoted; the
    last of repeated keys wins. A line with neither ``=`` nor ``:`` is an error naming ``source``.
    Unlike go-ini (Unicode ``TrimSpace``), a ``DEVNAME`` ending in U+2028 or U+0085 keeps it: the
    name is the host's, byte for byte.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip(_BLANKS)
        if not line or line[0] in "#;":
            continue
        equals, colon = line.find("="), line.find(":")
        cut = colon if equals < 0 else equals if colon < 0 else min(equals, colon)
        if cut <= 0:
            raise ResolveError(
                f"malformed uevent file {source}: line {number} {raw!r} is not KEY=VALUE",
                device=device,
                field="major:minor",
            )
        key, value = line[:cut].strip(_BLANKS), line[cut + 1 :].strip(_BLANKS)
        if "#" in value or ";" in value:
            for stop in "#;":
                if stop in value:
                    value = value[: value.index(stop)].strip(_BLANKS)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
            value = value[1:-1]
        values[key] = value
    return values


def devname_path(devname: str, *, source: str, device: str) -> str:
    """``/dev/<DEVNAME>``, refusing names that would leave ``/dev``."""
    if devname and "." not in devname and "//" not in devname and devname[0] != "/" and devname[-1] != "/":
        return "/dev/" + devname  # what normpath gives for a plain name, without its cost
    path = posixpath.normpath(posixpath.join("/dev", devname))
    if not devname or devname.startswith("/") or not path.startswith("/dev/"):
        raise ResolveError(
            f"uevent file {source} has an unusable DEVNAME {devname!r}",
            device=device,
            field="major:minor",
        )
    return path


@hookimpl(trylast=True)
def resolve_host_path(info: DeviceInfo, host: HostContext) -> str | None:
    if not info.container_path:
        raise ResolveError("empty path provided for device", device=info.name, field="path")
    if info.is_block_file:
        return info.host_path
    kind = _SYS_DEV_KIND.get(info.dev_type)
    if kind is None:  # FIFOs have no sysfs entry
        return info.container_path
    source = host.sysfs.file(f"dev/{kind}/{info.major}:{info.minor}/uevent")
    data = read_regular(source)  # SysfsReader.read_text, with the file's name made once
    text = None if data is None else decode_text(data, source)
    if text is None and info.dev_type == "b":
        # Kata falls back to the container path, and the disk attached is whatever host file or
        # node sits there (/etc/shadow for a made-up 259:99); a disk must be the node requested
        raise ResolveError(
            f"this host has no block device {info.major}:{info.minor} (no {json.dumps(source)})",
            device=info.container_path,
            field="major:minor",
        )
    if text is None:  # a character device that stays in the container (Kata's fallback)
        return info.container_path
    values = parse_uevent(text, source=source, device=info.container_path)
    if "DEVNAME" not in values:
        raise ResolveError(
            f"uevent file {source} has no DEVNAME", device=info.container_path, field="major:minor"
        )
    return devname_path(values["DEVNAME"], source=source, device=info.container_path)
