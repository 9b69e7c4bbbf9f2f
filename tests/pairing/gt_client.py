"""One client of the ground-truth pairing test: real `openai` calls, each carrying a hidden id.

Runs in an instrumentation family's own environment (`.testenvs/<family>/bin/python`, set up by
`tests/instrumentation/envs.py`) with that family's real instrumentation and the SDK's OTLP
exporters (`--family none`: no instrumentation at all, any environment with `openai`). Makes
`--calls` chat calls to `--server-url`, every second one streamed (with the usage chunk), each
user message naming a hidden id that only the test knows; `--fail INDEX:STATUS` makes call
INDEX ask for model `fail-STATUS`, which the test server answers with that HTTP error (the
client does not retry); `--flaky INDEX:STATUS` makes it ask for `flaky-STATUS`, whose first
attempt the server answers with that error and the client retries (up to twice). Then flushes
its telemetry.
Prints one JSON line: the calls made (hidden id, model, streamed or not, the response id the
client saw, the HTTP status of the error it got, any error). Uses the family setup of
`tests/instrumentation/driver.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "instrumentation"))

MODEL = "gpt-4o-mini"


def _call(client: Any, hidden: str, stream: bool, model: str) -> dict[str, Any]:
    if model.startswith("flaky-"):
        client = client.with_options(max_retries=2)
    messages = [{"role": "user", "content": f"Question {hidden}: why does batching help?"}]
    seen: dict[str, Any] = {
        "hidden": hidden,
        "model": model,
        "stream": stream,
        "response_id": None,
        "status": None,
        "error": None,
    }
    try:
        if stream:
            chunks = client.chat.completions.create(
                model=model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
            for chunk in chunks:
                seen["response_id"] = chunk.id
        else:
            seen["response_id"] = client.chat.completions.create(
                model=model, messages=messages, max_tokens=100
            ).id
    except Exception as exc:
        seen["error"] = f"{type(exc).__name__}: {exc}"
        # the openai client's APIStatusError carries the answer's status
        seen["status"] = getattr(exc, "status_code", None)
    return seen


def _failures(specs: list[str]) -> dict[int, int]:
    """`INDEX:STATUS` arguments as {call index: HTTP status}."""
    out: dict[int, int] = {}
    for spec in specs:
        index, _, status = spec.partition(":")
        out[int(index)] = int(status)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True)
    parser.add_argument("--exporter", default="otlp-http", choices=("otlp-http", "otlp-grpc"))
    parser.add_argument("--endpoint", default=None)
    parser.add_argument("--server-url", required=True)
    parser.add_argument("--service-name", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--fail", action="append", default=[], metavar="INDEX:STATUS")
    parser.add_argument("--flaky", action="append", default=[], metavar="INDEX:STATUS")
    args = parser.parse_args(argv)
    failures = _failures(args.fail)
    flaky = _failures(args.flaky)
    telemetry = None
    if args.family != "none":
        import driver

        mode = driver.MODES[args.family][0]
        driver._set_mode_env(args.family, mode)
        telemetry = driver.Telemetry(args.exporter, args.endpoint, args.service_name)
        driver._instrument(args.family, mode)
    import openai

    client = openai.OpenAI(base_url=args.server_url, api_key="test-key", max_retries=0, timeout=30)
    calls = [
        _call(
            client,
            f"{args.tag}-{i}",
            stream=bool(i % 2),
            model=(
                f"fail-{failures[i]}"
                if i in failures
                else f"flaky-{flaky[i]}"
                if i in flaky
                else MODEL
            ),
        )
        for i in range(args.calls)
    ]
    if telemetry is not None:
        telemetry.shutdown()
    print(json.dumps({"tag": args.tag, "calls": calls}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
