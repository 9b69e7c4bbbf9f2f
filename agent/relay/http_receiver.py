"""The relay's OTLP/HTTP receiver: `POST /v1/{traces,metrics,logs}`, protobuf or JSON, gzip.

Takes in: an `Intake`, the receiver limits, the relay's counters and an executor for the
blocking intake work. Gives out: a Starlette ASGI app. Reading, inflating and parsing the body
are the collector's own (`collector.otlp.body`, `.jsonwire`, `.ingest`), so both endpoints
refuse the same inputs the same way. Answers, as the OTLP specification says:
- 200 with an empty `Export*ServiceResponse` (in the request's encoding) once the export is in
  the relay's buffer;
- 400 for a body that is not an export (truncated or garbage protobuf, malformed JSON, a
  corrupt gzip stream), 413 past `max_body_bytes` (declared, or found while inflating: a gzip
  bomb stops at the limit), 415 for an unknown Content-Type or Content-Encoding;
- 503 with `Retry-After` when the buffer is full, so the sender's exporter retries;
each error with a `google.rpc.Status` body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor

from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from agent.relay.buffer import RelayStats
from agent.relay.enrich import Peer
from agent.relay.intake import BufferFullError, Intake
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
from collector.otlp.ingest import SIGNALS, ExportError, Signal, parse_protobuf
from collector.otlp.jsonwire import JsonWireError, parse_json, to_json
from collector.otlp.limits import ReceiverLimits

log = logging.getLogger(__name__)


def _encode(message: Message, encoding: Encoding, status: int = 200) -> Response:
    if encoding == "json":
        return Response(to_json(message), status_code=status, media_type=JSON)
    return Response(message.SerializeToString(), status_code=status, media_type=PROTOBUF)


def _error(
    status: int, code: int, text: str, encoding: Encoding, headers: dict[str, str] | None = None
) -> Response:
    response = _encode(status_pb2.Status(code=code, message=text), encoding, status)
    if headers:
        response.headers.update(headers)
    return response


class _Handler:
    def __init__(
        self, intake: Intake, limits: ReceiverLimits, stats: RelayStats, executor: Executor
    ) -> None:
        self.intake = intake
        self.limits = limits
        self.stats = stats
        self.executor = executor

    async def handle(self, request: Request, signal: Signal) -> Response:
        response = await self._handle(request, signal)
        if response.status_code in (400, 413, 415):
            self.stats.request("invalid")
        return response

    async def _handle(self, request: Request, signal: Signal) -> Response:
        content_type = request.headers.get("content-type", "")
        try:
            encoding, coding = body_format(
                content_type, request.headers.get("content-encoding", "")
            )
        except UnsupportedFormatError as exc:
            reply_as: Encoding = media_encoding(content_type) or "json"
            return _error(415, code_pb2.INVALID_ARGUMENT, str(exc), reply_as)
        limit = self.limits.max_body_bytes
        too_large = _error(
            413,
            code_pb2.RESOURCE_EXHAUSTED,
            f"the export is larger than {limit} bytes (after decompression)",
            encoding,
        )
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return _error(400, code_pb2.INVALID_ARGUMENT, "invalid Content-Length", encoding)
            if int(declared) > limit + (65536 if coding else 0):
                return too_large
        try:
            body = await read_body(request.stream(), coding, limit)
        except BodyTooLargeError:
            return too_large
        except BadEncodingError as exc:
            return _error(400, code_pb2.INVALID_ARGUMENT, str(exc), encoding)
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            if encoding == "json":
                message = parse_json(body, signal.request_type)
            else:
                message = parse_protobuf(signal, body)
        except JsonWireError as exc:
            return _error(400, code_pb2.INVALID_ARGUMENT, f"malformed OTLP/JSON: {exc}", encoding)
        except ExportError as exc:
            return _error(400, code_pb2.INVALID_ARGUMENT, exc.message, encoding)
        client, server = request.client, request.scope.get("server")
        peer = (
            Peer(client.host, client.port, int(server[1]) if server else 0)
            if client is not None
            else None
        )
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self.executor, self.intake.accept, signal.name, message, peer
            )
        except BufferFullError as exc:
            return _error(
                503,
                code_pb2.UNAVAILABLE,
                f"{exc}; retry later",
                encoding,
                {"Retry-After": str(self.limits.retry_after_s)},
            )
        except Exception:
            log.exception("relaying an OTLP %s export failed", signal.name)
            return _error(500, code_pb2.INTERNAL, "the relay failed on this export", encoding)
        return _encode(signal.response_type(), encoding)


def build_http_app(
    intake: Intake, limits: ReceiverLimits, stats: RelayStats, executor: Executor
) -> Starlette:
    """The relay's OTLP/HTTP ASGI app (see the module docstring)."""
    handler = _Handler(intake, limits, stats, executor)

    def endpoint(signal: Signal) -> Callable[[Request], Awaitable[Response]]:
        async def export(request: Request) -> Response:
            return await handler.handle(request, signal)

        return export

    return Starlette(
        routes=[
            Route(f"/v1/{name}", endpoint(signal), methods=["POST"])
            for name, signal in SIGNALS.items()
        ]
    )
