"""The decoder matches ebpf/include/events.h: offsets compiled from the header, and decoding."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from agent.capture import events as ev
from agent.capture.exchange import Role
from tests.conftest import REPO

HEADER = REPO / "ebpf" / "include" / "events.h"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_python_offsets_match_the_c_header(tmp_path: Path) -> None:
    names = list(ev.FIELD_OFFSETS)
    lines = [
        f'printf("{n} %zu\\n", offsetof(struct {n.split(".")[0]}, {n.split(".")[1]}));'
        for n in names
    ]
    lines += [f'printf("sizeof.{s} %zu\\n", sizeof(struct {s}));' for s in ev.STRUCT_SIZES]
    src = tmp_path / "layout.c"
    src.write_text(
        "#include <stddef.h>\n#include <stdio.h>\n#include <linux/types.h>\n"
        f'#include "{HEADER}"\nint main(void) {{\n' + "\n".join(lines) + "\nreturn 0;\n}\n"
    )
    exe = tmp_path / "layout"
    subprocess.run(["gcc", "-Wall", "-Werror", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    compiled = {k: int(v) for k, v in (line.split() for line in out.splitlines())}
    for name, offset in ev.FIELD_OFFSETS.items():
        assert compiled[name] == offset, name
    for name, size in ev.STRUCT_SIZES.items():
        assert compiled[f"sizeof.{name}"] == size, name
    abi = next(
        line
        for line in HEADER.read_text().splitlines()
        if "EVENTS_ABI_VERSION" in line and line.startswith("#define")
    )
    assert int(abi.split()[-1]) == ev.ABI_VERSION


def _data_record(payload: bytes, length: int, flags: int = 0, direction: int = 1) -> bytes:
    head = ev.encode_header(
        ev.EV_DATA,
        mono_ns=123,
        conn_id=9,
        ssl_ptr=0xABC,
        cgroup_id=77,
        pid=10,
        tid=11,
        fd=5,
        direction=direction,
        role=2,
        flags=flags,
        comm=b"python3",
    )
    return head + ev.DATA_TAIL.pack(length, len(payload), 2, ev.Op.RECVFROM, 0) + payload


def test_decode_data_event() -> None:
    got = ev.decode(_data_record(b"GET / HTTP/1.1\r\n", 16))
    assert isinstance(got, ev.RawEvent)
    assert (got.mono_ns, got.pid, got.tid, got.conn_id, got.fd) == (123, 10, 11, 9, 5)
    assert got.direction is ev.Direction.INGRESS
    assert got.role is Role.SERVER
    assert got.payload == b"GET / HTTP/1.1\r\n"
    assert not got.truncated
    assert got.lost_bytes == 0
    assert (got.op, got.piece, got.comm, got.cgroup_id) == (ev.Op.RECVFROM, 2, "python3", 77)


def test_decode_truncated_data_event() -> None:
    got = ev.decode(_data_record(b"abc", 1000, flags=ev.EVF_TRUNCATED | ev.EVF_TLS, direction=0))
    assert isinstance(got, ev.RawEvent)
    assert got.truncated
    assert got.tls
    assert got.lost_bytes == 997
    assert got.direction is ev.Direction.EGRESS


def test_decode_conn_events_ipv4_and_mapped_ipv6() -> None:
    head = ev.encode_header(
        ev.EV_CONN_OPEN, conn_id=3, pid=1, fd=4, role=1, flags=ev.EVF_UNVERIFIED
    )
    tail = ev.CONN_TAIL.pack(
        socket.AF_INET, 8443, 0, 0, -1, 0, socket.inet_aton("10.1.2.3").ljust(16, b"\0"), b"\0" * 16
    )
    got = ev.decode(head + tail)
    assert isinstance(got, ev.ConnOpenEvent)
    assert (got.role, got.peer_addr, got.peer_port, got.local_addr) == (
        Role.CLIENT,
        "10.1.2.3",
        8443,
        "",
    )
    assert got.unverified
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.1")
    v6 = socket.inet_pton(socket.AF_INET6, "fd00::1")
    tail = ev.CONN_TAIL.pack(socket.AF_INET6, 80, 9000, 0, 12, 0, mapped, v6)
    got = ev.decode(ev.encode_header(ev.EV_CONN_OPEN, role=2) + tail)
    assert isinstance(got, ev.ConnOpenEvent)
    assert (got.peer_addr, got.local_addr, got.local_port, got.listen_fd) == (
        "127.0.0.1",
        "fd00::1",
        9000,
        12,
    )


def test_decode_other_kinds_and_rejects() -> None:
    close = ev.decode(ev.encode_header(ev.EV_CONN_CLOSE, conn_id=5, fd=3, role=1))
    assert close == ev.ConnCloseEvent(0, 0, 0, 5, 3, Role.CLIENT)
    bind = ev.decode(
        ev.encode_header(ev.EV_TLS_BIND, conn_id=5, ssl_ptr=0x10, fd=3, role=1)
        + ev.BIND_TAIL.pack(ev.BindHow.SET_FD, 0)
    )
    assert isinstance(bind, ev.TlsBindEvent)
    assert (bind.ssl_ptr, bind.how) == (0x10, ev.BindHow.SET_FD)
    free = ev.decode(ev.encode_header(ev.EV_TLS_FREE, ssl_ptr=0x10))
    assert isinstance(free, ev.TlsFreeEvent)
    exe = ev.decode(ev.encode_header(ev.EV_PROC_EXEC, pid=44, comm=b"node"))
    assert exe == ev.ProcessEvent(0, 44, 0, exited=False, comm="node")
    assert ev.decode(b"short") is None
    assert ev.decode(ev.encode_header(99)) is None
    assert ev.decode(ev.encode_header(ev.EV_DATA)) is None  # data record without its tail
    assert ev.decode(ev.encode_header(ev.EV_TLS_BIND)) is None


def test_payload_longer_than_the_record_is_cut_to_what_is_there() -> None:
    rec = _data_record(b"abcdef", 6)[:-3]  # a record shorter than cap_bytes claims
    got = ev.decode(rec)
    assert isinstance(got, ev.RawEvent)
    assert got.payload == b"abc"
    assert got.truncated
