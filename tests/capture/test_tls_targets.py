"""Finding OpenSSL on this machine: real libssl, real node, real importers; settings checks."""

from __future__ import annotations

import os
import shutil
import ssl
from pathlib import Path

import pytest

from agent.capture.config import CaptureConfig
from agent.capture.tls_targets import ALL_SYMBOLS, DATA_SYMBOLS, TlsTargetFinder, exported_functions


def _libssl_of_this_process() -> str:
    assert ssl.OPENSSL_VERSION  # the module (and its libssl) is loaded
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and "libssl" in parts[5]:
            return parts[5].strip()
    pytest.skip("this Python links OpenSSL statically")


def test_libssl_exports_the_data_functions() -> None:
    found = exported_functions(_libssl_of_this_process(), ALL_SYMBOLS)
    assert set(DATA_SYMBOLS) <= set(found)
    assert "SSL_set_fd" in found


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_carries_openssl_inside() -> None:
    node = os.path.realpath(shutil.which("node") or "")
    found = exported_functions(node, ALL_SYMBOLS)
    assert {"SSL_write", "SSL_read"} <= set(found)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_a_program_that_only_imports_openssl_is_not_a_target() -> None:
    # curl calls SSL_write through libcurl/libssl: nothing is defined in the executable.
    assert exported_functions(os.path.realpath(shutil.which("curl") or ""), ALL_SYMBOLS) == ()


def test_non_elf_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + b"\xff" * 200)
    assert exported_functions(str(junk), ALL_SYMBOLS) == ()
    assert exported_functions(str(tmp_path / "missing"), ALL_SYMBOLS) == ()
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    assert exported_functions(str(script), ALL_SYMBOLS) == ()


def test_finder_reports_each_file_once() -> None:
    lib = _libssl_of_this_process()
    finder = TlsTargetFinder()
    first = finder.scan_pid(os.getpid())
    # other packages may have loaded their own OpenSSL copies (psycopg's wheel bundles one):
    # each file must be reported once, and the system library among them.
    assert len({(t.dev, t.ino) for t in first}) == len(first)
    mine = [t for t in first if t.ino == os.stat(lib).st_ino]
    assert len(mine) == 1
    target = mine[0]
    assert target.kind == "library"
    assert finder.scan_pid(os.getpid()) == []
    assert all(t.ino != target.ino for t in finder.scan_all())
    finder.forget(target)
    assert [t.ino for t in finder.scan_pid(os.getpid())] == [target.ino]
    assert TlsTargetFinder(skip_pids=[os.getpid()]).scan_pid(os.getpid()) == []


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"max_payload_bytes": 10}, "capture.max_payload_bytes"),
        ({"ring_buffer_bytes": 5000}, "capture.ring_buffer_bytes"),
        ({"ring_buffer_bytes": 4096, "max_payload_bytes": 16384}, "capture.ring_buffer_bytes"),
        ({"max_pieces_per_call": 0}, "capture.max_pieces_per_call"),
        ({"filter_ports": frozenset({70000})}, "capture.filter_ports"),
        ({"queue_size": 0}, "capture.queue_size"),
        ({"idle_timeout_s": 0}, "capture.idle_timeout_s"),
    ],
)
def test_invalid_settings_name_their_key(change: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        CaptureConfig(**change).validate()  # type: ignore[arg-type]


def test_defaults_are_valid_and_listed() -> None:
    assert CaptureConfig().validate().max_payload_bytes == 16384
    assert "filter_ports" in CaptureConfig.keys()  # noqa: SIM118
