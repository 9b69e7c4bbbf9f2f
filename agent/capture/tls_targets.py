"""Finds the files that carry OpenSSL in the processes of this node.

Takes a procfs root; gives `TlsTarget`s: each shared library named like libssl that a process
maps, and each executable that defines and exports OpenSSL's data functions itself (Node.js
links OpenSSL statically and exports it). Paths are given through `/proc/<pid>/root` so that
files inside containers resolve from the host. A file is reported once per (device, inode), so
rescanning is cheap. Reads only procfs and ELF headers; attaches nothing.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# The functions whose arguments and return values carry plaintext, and the two that let us tie
# an SSL object to its socket or forget it.
DATA_SYMBOLS = ("SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex")
AUX_SYMBOLS = ("SSL_set_fd", "SSL_free")
ALL_SYMBOLS = DATA_SYMBOLS + AUX_SYMBOLS

_ELF_MAGIC = b"\x7fELF"
_SHT_DYNSYM = 11
_SHN_UNDEF = 0
_STT_FUNC = 2
_STT_GNU_IFUNC = 10


@dataclass(frozen=True, slots=True)
class TlsTarget:
    """One file to put OpenSSL uprobes on."""

    path: str  # as the host sees it (through /proc/<pid>/root or /proc/<pid>/exe)
    kind: str  # "library" or "executable"
    dev: int
    ino: int
    symbols: tuple[str, ...]  # which of ALL_SYMBOLS it defines
    pid: int  # the process it was found in
    found_by: str = "scan"  # "scan" (of /proc/*/maps), "open" (seen being opened), "config"


def exported_functions(path: str, wanted: Iterable[str]) -> tuple[str, ...]:
    """Which of `wanted` the ELF file at `path` defines in its dynamic symbol table.

    Symbols that are only imported (undefined) do not count: a program that calls libssl has
    `SSL_write` in its table too, but the code lives in the library. Returns () for anything
    that is not a readable 64-bit little-endian ELF file.
    """
    wanted_set = set(wanted)
    try:
        with open(path, "rb") as f:
            ident = f.read(64)
            if len(ident) < 64 or ident[:4] != _ELF_MAGIC or ident[4] != 2 or ident[5] != 1:
                return ()
            shoff = struct.unpack_from("<Q", ident, 0x28)[0]
            shentsize, shnum = struct.unpack_from("<HH", ident, 0x3A)
            if shoff == 0 or shnum == 0 or shentsize < 64 or shnum > 65535:
                return ()
            f.seek(shoff)
            sections = f.read(shentsize * shnum)
            for i in range(shnum):
                sh = sections[i * shentsize : i * shentsize + 64]
                if len(sh) < 64:
                    break
                sh_type = struct.unpack_from("<I", sh, 4)[0]
                if sh_type != _SHT_DYNSYM:
                    continue
                sym_off, sym_size = struct.unpack_from("<QQ", sh, 0x18)
                link = struct.unpack_from("<I", sh, 0x28)[0]
                entsize = struct.unpack_from("<Q", sh, 0x38)[0] or 24
                strsh = sections[link * shentsize : link * shentsize + 64]
                if len(strsh) < 64:
                    return ()
                str_off, str_size = struct.unpack_from("<QQ", strsh, 0x18)
                f.seek(str_off)
                strtab = f.read(str_size)
                name_offsets: dict[int, str] = {}
                for name in wanted_set:
                    pos = strtab.find(b"\0" + name.encode() + b"\0")
                    if pos >= 0:
                        name_offsets[pos + 1] = name
                if not name_offsets:
                    return ()
                f.seek(sym_off)
                symtab = f.read(sym_size)
                found: set[str] = set()
                for st_name, st_info, _other, st_shndx, _value, _size in struct.iter_unpack(
                    "<IBBHQQ", symtab[: len(symtab) - len(symtab) % entsize]
                ):
                    sym = name_offsets.get(st_name)
                    if sym is None or st_shndx == _SHN_UNDEF:
                        continue
                    if st_info & 0xF in (_STT_FUNC, _STT_GNU_IFUNC):
                        found.add(sym)
                return tuple(s for s in ALL_SYMBOLS if s in found) + tuple(
                    sorted(found - set(ALL_SYMBOLS))
                )
    except (OSError, struct.error, ValueError):
        return ()
    return ()


def _same_file(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


class TlsTargetFinder:
    """Remembers which files were already looked at; each scan reports only new targets."""

    def __init__(self, proc_root: str = "/proc", *, skip_pids: Iterable[int] = ()) -> None:
        self._proc = proc_root.rstrip("/")
        self._seen_files: set[tuple[int, int]] = set()
        self._skip = set(skip_pids)

    def _pids(self) -> list[int]:
        try:
            return [int(n) for n in os.listdir(self._proc) if n.isdigit()]
        except OSError:
            return []

    def _consider(self, path: str, kind: str, pid: int, found_by: str = "scan") -> TlsTarget | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino)
        if key in self._seen_files:
            return None
        self._seen_files.add(key)
        symbols = exported_functions(path, ALL_SYMBOLS)
        if not any(s in symbols for s in DATA_SYMBOLS):
            return None
        return TlsTarget(
            path=path,
            kind=kind,
            dev=st.st_dev,
            ino=st.st_ino,
            symbols=symbols,
            pid=pid,
            found_by=found_by,
        )

    def forget(self, target: TlsTarget) -> None:
        """Let a later scan report this file again (attaching to it failed)."""
        self._seen_files.discard((target.dev, target.ino))

    def scan_pid(self, pid: int) -> list[TlsTarget]:
        """New OpenSSL files mapped by one process."""
        if pid in self._skip:
            return []
        base = f"{self._proc}/{pid}"
        try:
            with open(f"{base}/maps", "rb") as f:
                maps = f.read()
        except OSError:
            return []
        found: list[TlsTarget] = []
        if b"libssl" in maps:
            paths: set[str] = set()
            for line in maps.splitlines():
                parts = line.split(None, 5)
                if len(parts) == 6 and b"libssl" in parts[5]:
                    name = parts[5].decode("utf-8", "replace").strip()
                    if name.startswith("/") and not name.endswith("(deleted)"):
                        paths.add(name)
            for name in sorted(paths):
                # The same file seen from our own mount namespace outlives the process.
                path = f"{base}/root{name}"
                if _same_file(name, path):
                    path = name
                target = self._consider(path, "library", pid)
                if target is not None:
                    found.append(target)
        else:
            target = self._consider(f"{base}/exe", "executable", pid)
            if target is not None:
                found.append(target)
        return found

    def scan_all(self) -> list[TlsTarget]:
        """New OpenSSL files mapped by any process."""
        found: list[TlsTarget] = []
        for pid in self._pids():
            found.extend(self.scan_pid(pid))
        return found

    def consider_opened(self, pid: int, name: str) -> TlsTarget | None:
        """A file process `pid` just opened under `name` (as it named it), if it is new
        OpenSSL."""
        if pid in self._skip or not name:
            return None
        base = f"{self._proc}/{pid}"
        path = f"{base}/root{name}" if name.startswith("/") else f"{base}/cwd/{name}"
        if name.startswith("/") and _same_file(name, path):
            path = name
        kind = "library" if ".so" in name else "executable"
        return self._consider(path, kind, pid, "open")

    def consider_path(self, path: str) -> TlsTarget | None:
        """A file named in the configuration, if it carries OpenSSL and is new."""
        return self._consider(path, "library" if ".so" in path else "executable", 0, "config")
