"""The OTLP/HTTP receiver: a Starlette ASGI app serving `POST /v1/{traces,metrics,logs}`.

Takes the store writer, the receiver limits, a Prometheus registry and optionally a
`DecodePool` whose workers decode the exports; gives an ASGI app.
Accepts `application/x-protobuf` and `application/json` bodies, optionally gzip- or
deflate-encoded, and answers as the OTLP specification says:
- 200 with the `Export*ServiceResponse` in the request's encoding, after the commit, with
  `partial_success` when some items were rejected;
- 400 for an undecodable body, 401 without the configured bearer token, 413 past the size
  limit (a declared `Content-Length` is refused before any byte is read; compressed bodies are
  measured as they inflate), 415 for an unknown `Content-Type` or `Content-Encoding`,
  503 with `Retry-After` when the write queue is full, each with a `google.rpc.Status` body
  (JSON when the request was JSON or of an unknown type, protobuf otherwise).
Must not: store anything from a request it answers with an error.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from collector.otlp.body import (
    JSON,
    PROTOBUF,
    BadEncodingError,
    BodyTooLargeError,
    Encoding,
    UnsupportedFormatError,
    body_format,
    media_encoding,
    read_body,
)
from collector.otlp.counters import ReceiverCounters, counters_for
from collector.otlp.ingest import SIGNALS, ExportError, Signal, export, parse_protobuf
from collector.otlp.jsonwire import JsonWireError, parse_json, to_json
from collector.otlp.limits import ReceiverLimits
from collector.otlp.pool import DecodePool, export_pooled
from store.writer import StoreWriter

log = logging.getLogger(__name__)

_ERROR_CODES = {
    "invalid": (400, code_pb2.INVALID_ARGUMENT),
    "too_large": (413, code_pb2.RESOURCE_EXHAUSTED),
    "unavailable": (503, code_pb2.UNAVAILABLE),
    "internal": (500, code_pb2.INTERNAL),
}


def _encode(message: Message, encoding: Encoding) -> Response:
    if encoding == "json":
        return Response(to_json(message), media_type=JSON)
    return Response(message.SerializeToString(), media_type=PROTOBUF)


def _status(
    http_status: int,
    code: int,
    message: str,
    encoding: Encoding,
    headers: dict[str, str] | None = None,
) -> Response:
    body = status_pb2.Status(code=code, message=message)
    response = _encode(body, encoding)
    response.status_code = http_status
    if headers:
        response.headers.update(headers)
    return response


class _Receiver:
    """The request handler bound to one writer, one set of limits and one set of counters."""

    def __init__(
        self,
        writer: StoreWriter,
        limits: ReceiverLimits,
        counters: ReceiverCounters,
        pool: DecodePool | None,
    ) -> None:
        self.writer = writer
        self.limits = limits
        self.counters = counters
        self.pool = pool
        token = limits.bearer_token
        self._expected_auth = None if token is None else f"Bearer {token}".encode()

    def _authorized(self, request: Request) -> bool:
        if self._expected_auth is None:
            return True
        given = request.headers.get("authorization", "").strip().encode()
        # The scheme name is case-insensitive (RFC 9110); the token is not.
        if given[:7].lower() == b"bearer ":
            given = b"Bearer " + given[7:].lstrip()
        return hmac.compare_digest(given, self._expected_auth)

    async def handle(self, request: Request, signal: Signal) -> Response:
        response = await self._handle(request, signal)
        self.counters.requests.labels(signal.name, "http", str(response.status_code)).inc()
        return response

    async def _handle(self, request: Request, signal: Signal) -> Response:
        content_type = request.headers.get("content-type", "")
        reply_as: Encoding = media_encoding(content_type) or "json"
        limits = self.limits
        if not self._authorized(request):
            return _status(
                401,
                code_pb2.UNAUTHENTICATED,
                "missing or wrong bearer token",
                reply_as,
                {"WWW-Authenticate": 'Bearer realm="otlp"'},
            )
        try:
            encoding, coding = body_format(
                content_type, request.headers.get("content-encoding", "")
            )
        except UnsupportedFormatError as exc:
            return _status(415, code_pb2.INVALID_ARGUMENT, str(exc), reply_as)

        def too_large() -> Response:
            return _status(
                413,
                code_pb2.RESOURCE_EXHAUSTED,
                f"the export is larger than {limits.max_body_bytes} bytes (after decompression)",
                reply_as,
            )

        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                declared_bytes = int(declared)
            except ValueError:
                return _status(400, code_pb2.INVALID_ARGUMENT, "invalid Content-Length", reply_as)
            if declared_bytes > limits.max_body_bytes + (65536 if coding else 0):
                return too_large()
        try:
            body = await read_body(request.stream(), coding, limits.max_body_bytes)
        except BodyTooLargeError:
            return too_large()
        except BadEncodingError as exc:
            return _status(400, code_pb2.INVALID_ARGUMENT, str(exc), reply_as)
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            if encoding == "json":
                message = parse_json(body, signal.request_type)
                if self.pool is not None:
                    body = message.SerializeToString()
            if self.pool is not None:
                result = await export_pooled(
                    signal,
                    body,
                    pool=self.pool,
                    writer=self.writer,
                    counters=self.counters,
                    transport="http",
                )
            else:
                if encoding != "json":
                    message = parse_protobuf(signal, body)
                result = await export(
                    signal,
                    message,
                    writer=self.writer,
                    limits=limits,
                    counters=self.counters,
                    transport="http",
                    offload=len(body) >= limits.offload_decode_bytes,
                )
        except JsonWireError as exc:
            return _status(400, code_pb2.INVALID_ARGUMENT, f"malformed OTLP/JSON: {exc}", encoding)
        except ExportError as exc:
            http_status, code = _ERROR_CODES[exc.kind]
            headers = (
                {"Retry-After": str(limits.retry_after_s)} if exc.kind == "unavailable" else None
            )
            return _status(http_status, code, exc.message, encoding, headers)
        return _encode(result, encoding)


def build_http_app(
    writer: StoreWriter,
    limits: ReceiverLimits | None = None,
    *,
    registry: CollectorRegistry | None = None,
    pool: DecodePool | None = None,
) -> Starlette:
    """The OTLP/HTTP ASGI app (see the module docstring). Serve it with uvicorn.

    With `pool`, exports are decoded in its worker processes; without, on the event loop."""
    receiver = _Receiver(writer, limits or ReceiverLimits(), counters_for(registry), pool)

    def endpoint(signal: Signal) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            return await receiver.handle(request, signal)

        handler.__name__ = f"export_{signal.name}"
        return handler

    routes = [
        Route(f"/v1/{name}", endpoint(signal), methods=["POST"]) for name, signal in SIGNALS.items()
    ]
    return Starlette(routes=routes)
