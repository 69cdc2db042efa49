"""What a command left running, read from /proc: its process tree and the TCP ports those processes listen on."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from pathlib import Path


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def tree(root: int) -> set[int]:
    """``root`` and every process below it now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (parent := parent_of(int(entry.name))) is not None:
            children.setdefault(parent, []).append(int(entry.name))
    found, pending = set(), [root]
    while pending:
        pid = pending.pop()
        found.add(pid)
        pending.extend(children.get(pid, []))
    return found


def running(pids: set[int]) -> dict[int, str]:
    """The processes of ``pids`` still running (zombies excluded), with their command names."""
    alive: dict[int, str] = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] != "Z":
                alive[pid] = stat[stat.index("(") + 1 : stat.rindex(")")]
    return alive


def _listening_inodes() -> dict[str, tuple[str, int]]:
    """Socket inode -> (address, port) of every listening TCP socket on the machine."""
    listening: dict[str, tuple[str, int]] = {}
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] != "0A":  # TCP_LISTEN
                    continue
                hex_address, hex_port = fields[1].split(":")
                raw = bytes.fromhex(hex_address)
                # /proc prints each 32-bit word in host (little-endian) order.
                ordered = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
                listening[fields[9]] = (str(ipaddress.ip_address(ordered)), int(hex_port, 16))
    return listening


def listening(pids: set[int]) -> set[tuple[str, int, str]]:
    """(address, port, command) of every TCP socket the processes listen on."""
    inodes = _listening_inodes()
    names = running(pids)
    found: set[tuple[str, int, str]] = set()
    for pid in names:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    inode = target[len("socket:[") : -1] if target.startswith("socket:[") else None
                    if inode in inodes:
                        found.add((*inodes[inode], names[pid]))
    return found


def is_loopback(address: str) -> bool:
    parsed = ipaddress.ip_address(address)
    mapped = getattr(parsed, "ipv4_mapped", None)
    return bool((mapped or parsed).is_loopback)
