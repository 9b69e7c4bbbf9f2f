"""Real HTTP servers on loopback that stand in for inference engines and the kubelet.

`EngineServer` serves one of the exposition samples in `samples/` at `/metrics` (a
`string.Template` whose `$fields` come from `values`, which tests change between scrapes), and
TGI's `/info`; `JsonServer` serves a JSON document at one path (the kubelet's `/pods`) and
records the Authorization headers it was sent. Both listen on 127.0.0.1 or ::1 on a free port,
in a daemon thread, until `close()`.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from string import Template
from typing import Any

SAMPLES = Path(__file__).resolve().parent / "samples"


def sample(name: str, **values: object) -> str:
    """A sample page with its `$fields` filled in."""
    return Template((SAMPLES / name).read_text()).substitute(values)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _V6Server(_Server):
    address_family = socket.AF_INET6


class _Base:
    def __init__(self, host: str) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, content_type, body = owner.respond(self.path, dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server_class = _V6Server if ":" in host else _Server
        self.httpd = server_class((host, 0), Handler)
        self.host = host
        self.port = int(self.httpd.server_address[1])
        self.requests: list[str] = []
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def respond(self, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        raise NotImplementedError

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class EngineServer(_Base):
    """An engine's /metrics page (and /info for TGI)."""

    def __init__(
        self,
        sample_name: str,
        host: str = "127.0.0.1",
        info: dict[str, Any] | None = None,
        **values: object,
    ) -> None:
        self.template = Template((SAMPLES / sample_name).read_text())
        self.values: dict[str, object] = dict(values)
        self.info = info
        super().__init__(host)

    def respond(self, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        self.requests.append(path)
        if path == "/metrics":
            return (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.template.substitute(self.values).encode(),
            )
        if path == "/info" and self.info is not None:
            return 200, "application/json", json.dumps(self.info).encode()
        return 404, "text/plain", b"Not Found"


class JsonServer(_Base):
    """A JSON document at one path; every other path is 404."""

    def __init__(self, path: str, document: Any, host: str = "127.0.0.1") -> None:
        self.path = path
        self.document = document
        self.authorization: list[str | None] = []
        super().__init__(host)

    def respond(self, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        self.requests.append(path)
        if path != self.path:
            return 404, "text/plain", b"404 page not found"
        self.authorization.append(headers.get("Authorization"))
        return 200, "application/json", json.dumps(self.document).encode()


class TextServer(_Base):
    """Some other service's text at every path (a non-engine Prometheus page, an HTML app)."""

    def __init__(
        self, body: str, content_type: str = "text/plain", host: str = "127.0.0.1"
    ) -> None:
        self.body = body
        self.content_type = content_type
        super().__init__(host)

    def respond(self, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        self.requests.append(path)
        return 200, self.content_type, self.body.encode()
