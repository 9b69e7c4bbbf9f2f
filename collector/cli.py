"""The `infersight` command line: arguments in, a running component or a query result out.

Sub-commands: `collector` (OTLP receivers + DuckDB store + API), `demo` (a real GenAI workload
that exports to a collector), `sql` (query a running collector). Every command has `--help`.
Errors a user can fix (bad configuration, a port in use, a database from a newer release) end
with one clear line and exit code 2, not a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="infersight",
    help="Observability for AI inference: GenAI traces, GPU telemetry and analytics in DuckDB.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


@app.command()
def collector(
    db: Annotated[
        Path | None, typer.Option(help="DuckDB file [default: ./infersight.duckdb]")
    ] = None,
    otlp_grpc_port: Annotated[
        int | None, typer.Option(help="OTLP/gRPC port [default: 4317]")
    ] = None,
    otlp_http_port: Annotated[
        int | None, typer.Option(help="OTLP/HTTP port [default: 4318]")
    ] = None,
    api_port: Annotated[
        int | None, typer.Option(help="API/SQL/metrics port [default: 7070]")
    ] = None,
    pg_port: Annotated[
        int | None, typer.Option(help="PostgreSQL wire port [default: 5433]")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address [default: 0.0.0.0]")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML configuration file.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error")] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the effective configuration and exit.")
    ] = False,
) -> None:
    """Run the collector: OTLP in (gRPC and HTTP), DuckDB store, SQL and metrics out."""
    from collector.config import ConfigError, load_config

    server: dict[str, Any] = {
        k: v
        for k, v in {
            "host": host,
            "otlp_grpc_port": otlp_grpc_port,
            "otlp_http_port": otlp_http_port,
            "api_port": api_port,
            "log_level": log_level,
        }.items()
        if v is not None
    }
    store: dict[str, Any] = {"db": str(db)} if db is not None else {}
    pgwire: dict[str, Any] = {"port": pg_port} if pg_port is not None else {}
    try:
        cfg = load_config(config, overrides={"server": server, "store": store, "pgwire": pgwire})
    except ConfigError as exc:
        _fail(str(exc))
    if print_config:
        typer.echo(json.dumps(cfg.model_dump(), indent=2))
        return
    logging.basicConfig(
        level=cfg.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from collector.server import StartupError, run_collector
    from store.database import SchemaTooNewError

    try:
        run_collector(cfg)
    except (StartupError, SchemaTooNewError) as exc:
        _fail(str(exc))


@app.command()
def agent(
    collector_url: Annotated[
        str | None,
        typer.Option(
            "--collector",
            help="OTLP endpoint: grpc:// or port 4317 = gRPC, else HTTP "
            "(default: OTEL_EXPORTER_OTLP_ENDPOINT)",
        ),
    ] = None,
    protocol: Annotated[str | None, typer.Option(help="auto, grpc or http/protobuf")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML configuration file.")] = None,
    content: Annotated[str | None, typer.Option(help="off (default), metadata or full")] = None,
    pid: Annotated[list[int] | None, typer.Option(help="Only this pid (repeatable).")] = None,
    port: Annotated[list[int] | None, typer.Option(help="Only this service port.")] = None,
    cgroup: Annotated[list[str] | None, typer.Option(help="Only this cgroup.")] = None,
    namespace: Annotated[list[str] | None, typer.Option(help="Only this namespace.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Self-metrics port (9464)")] = None,
    gpu: Annotated[bool | None, typer.Option("--gpu/--no-gpu", help="GPU telemetry.")] = None,
    node_name: Annotated[str | None, typer.Option(help="This node (default: $NODE_NAME)")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error")] = None,
    otlp_grpc_port: Annotated[
        int | None,
        typer.Option(help="Node OTLP endpoint, gRPC port (4317; 0 any, -1 off)"),
    ] = None,
    otlp_http_port: Annotated[
        int | None,
        typer.Option(help="Node OTLP endpoint, HTTP port (4318; 0 any, -1 off)"),
    ] = None,
) -> None:
    """Run the node agent: eBPF capture of LLM traffic to OTLP spans and metrics, and the node's
    OTLP endpoint relaying applications' telemetry to the collector."""
    from agent.config import ConfigError, load_config

    overrides: dict[str, dict[str, Any]] = {
        "agent": {
            "content": content,
            "metrics_port": metrics_port,
            "node_name": node_name,
            "log_level": log_level,
        },
        "exporter": {"endpoint": collector_url, "protocol": protocol},
        "filters": {
            "pids": pid or None,
            "ports": port or None,
            "cgroups": cgroup or None,
            "namespaces": namespace or None,
        },
        "gpu": {"enabled": gpu},
        "relay": {
            "grpc_port": otlp_grpc_port,
            "http_port": otlp_http_port,
            # asking for a port means asking for the node's OTLP endpoint
            "mode": "on" if otlp_grpc_port is not None or otlp_http_port is not None else None,
        },
    }
    try:
        cfg = load_config(config, overrides)
    except ConfigError as exc:
        _fail(str(exc))
    _compile_capture_early(cfg)
    from agent.main import run_agent

    raise typer.Exit(run_agent(cfg))


def _compile_capture_early(cfg: Any) -> None:
    """Load the eBPF programs before the rest of the agent is imported, so that the compiler's
    transient memory does not stack on the agent's (the capture takes them when it starts)."""
    from agent.capture.bcc_binding import bcc_unavailable_reason

    if bcc_unavailable_reason() is not None:
        return  # the agent says what is missing when it starts
    from agent.capture.bpf_loader import compile_early
    from agent.config import ConfigError, capture_config

    try:
        compile_early(capture_config(cfg))
    except ConfigError:
        return


@app.command()
def demo(
    collector_url: Annotated[
        str, typer.Option("--collector", help="OTLP/HTTP endpoint of the collector.")
    ] = "http://127.0.0.1:4318",
    calls: Annotated[int, typer.Option(help="LLM calls to make.", min=1)] = 40,
    content: Annotated[bool, typer.Option(help="Also send prompt and response content.")] = True,
) -> None:
    """Send a small, real GenAI workload (a local OpenAI-compatible model server and its
    client, traced with the OpenTelemetry SDK) to a collector."""
    from collector.demo.workload import run_demo

    summary = run_demo(collector_url, calls=calls, content=content)
    err.print(
        f"sent {summary.calls} LLM calls ({summary.errors} failed on purpose) "
        f"in {summary.elapsed_s:.1f} s to {collector_url}"
    )


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One read-only SQL statement.")],
    api: Annotated[str, typer.Option(help="Collector API base URL.")] = "http://127.0.0.1:7070",
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
) -> None:
    """Query a running collector's trace store."""
    import httpx

    try:
        resp = httpx.post(
            f"{api.rstrip('/')}/api/v1/sql",
            params={"format": "csv" if fmt == "csv" else "json"},
            json={"sql": query},
            timeout=120,
        )
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the collector at {api}: {exc}")
    if resp.status_code != 200:
        try:
            message = resp.json().get("error", resp.text)
        except ValueError:
            message = resp.text
        _fail(f"{resp.status_code}: {message}")
    if fmt == "csv":
        sys.stdout.write(resp.text)
        return
    body = resp.json()
    if fmt == "json":
        typer.echo(json.dumps(body, indent=2))
        return
    table = Table(*body["columns"])
    for row in body["rows"]:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console().print(table)
    if body.get("truncated"):
        err.print("[yellow]result truncated at the row limit[/]")


def main() -> None:
    """Entry point for `python -m collector.cli`."""
    app()


if __name__ == "__main__":
    main()
