"""The loopback model server for the agent-overhead benchmark: options in, a serving process out.

Runs `tests.support.openai_server.OpenAIServer` with Nagle's algorithm off on every accepted
connection, as production HTTP servers (uvicorn, vLLM's, nginx) run. With Nagle on, the
server's separate header and body writes wait for the client's delayed ACK (about 40 ms on
Linux loopback), which would make every call take 40 ms of idle waiting and hide any CPU cost.
`python bench/_agent/server.py --port N ...` prints `listening on URL` and serves until killed.
Must not: listen on anything but loopback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.openai_server import OpenAIServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--chunk-interval-ms", type=float, default=0.0)
    parser.add_argument("--nagle", action="store_true", help="leave Nagle's algorithm on")
    args = parser.parse_args(argv)
    srv = OpenAIServer(args.port, args.first_chunk_delay_ms / 1000, args.chunk_interval_ms / 1000)
    httpd = srv._httpd
    handler = httpd.RequestHandlerClass
    setattr(handler, "disable_nagle_algorithm", not args.nagle)  # noqa: B010
    print(f"listening on http://127.0.0.1:{srv.port}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
