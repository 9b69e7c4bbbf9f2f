"""The OpenAI-compatible test server (`tests.support.openai_server`) behind TLS.

Run as `python -m tests.agent.tls_model_server --port N --cert C --key K [server options]`; prints
`listening on https://127.0.0.1:N` and serves until terminated. TLS is Python's `ssl` module, so
the plaintext passes through OpenSSL's `SSL_read_ex`/`SSL_write_ex`, where the capture reads it.
"""

from __future__ import annotations

import argparse
import ssl
import sys

from tests.support.openai_server import OpenAIServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-chunk-delay-ms", type=float, default=200.0)
    parser.add_argument("--chunk-interval-ms", type=float, default=2.0)
    parser.add_argument("--id-prefix", default="")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    srv = OpenAIServer(
        args.port, args.first_chunk_delay_ms / 1000, args.chunk_interval_ms / 1000, args.id_prefix
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    httpd = srv._httpd
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    print(f"listening on https://127.0.0.1:{srv.port}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
