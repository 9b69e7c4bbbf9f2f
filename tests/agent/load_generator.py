"""A paced load generator for the agent's completeness test: many keep-alive `requests` clients.

Takes a chat-completions URL, a target rate (calls/s), a duration and a number of client threads
(each with its own keep-alive `requests.Session`, as an application's connection pool would);
gives, on stdout as one JSON object, what was really offered: calls started and answered,
errors, the response ids of the answered calls, the elapsed time and the achieved rate, and
the achieved rate of the slowest and fastest seconds. Call k is due at start + k / rate (an
open schedule: a slow answer does not slow the offered load, other threads take the next
calls); one call in four is streamed (SSE with a usage chunk), the others are not. With
`--unique-models`, call k asks for model `MODEL-k`, so that each span tells which request it
was made from.

Run as `python -m tests.agent.load_generator --url URL --rate 250 --duration 60 --threads 24`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from typing import Any


def _body(k: int, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": f"load call {k}: say something short"}],
        "max_tokens": 64,
    }
    if k % 4 == 3:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


def run(
    url: str, rate: float, duration_s: float, threads: int, model: str, unique: bool = False
) -> dict[str, Any]:
    import requests

    total = int(rate * duration_s)
    lock = threading.Lock()
    next_k = 0
    ids: list[str] = []
    errors: list[str] = []
    per_second: Counter[int] = Counter()
    start = time.monotonic() + 0.2

    def take() -> int | None:
        nonlocal next_k
        with lock:
            if next_k >= total:
                return None
            k = next_k
            next_k += 1
            return k

    def worker() -> None:
        with requests.Session() as session:
            while (k := take()) is not None:
                delay = start + k / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                body = _body(k, f"{model}-{k}" if unique else model)
                try:
                    resp = session.post(url, json=body, timeout=30, stream=bool(body.get("stream")))
                    if body.get("stream"):
                        rid = None
                        for line in resp.iter_lines():
                            if line.startswith(b"data: {") and rid is None:
                                rid = json.loads(line[6:])["id"]
                    else:
                        rid = resp.json()["id"]
                    resp.close()
                    if resp.status_code != 200 or rid is None:
                        raise RuntimeError(f"status {resp.status_code}")
                except Exception as exc:  # counted and reported, never hidden
                    with lock:
                        errors.append(f"{k}: {type(exc).__name__}: {exc}")
                    continue
                with lock:
                    ids.append(str(rid))
                    per_second[int(time.monotonic() - start)] += 1

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed_s = time.monotonic() - start
    full_seconds = [per_second[s] for s in range(int(duration_s))]
    return {
        "offered": total,
        "answered": len(ids),
        "errors": errors[:20],
        "error_count": len(errors),
        "elapsed_s": elapsed_s,
        "rate_per_s": len(ids) / elapsed_s,
        "slowest_second": min(full_seconds) if full_seconds else 0,
        "fastest_second": max(full_seconds) if full_seconds else 0,
        "response_ids": ids,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=250)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--threads", type=int, default=24)
    parser.add_argument("--model", default="load-model")
    parser.add_argument("--unique-models", action="store_true", help="model-K for call K")
    args = parser.parse_args(argv)
    result = run(args.url, args.rate, args.duration, args.threads, args.model, args.unique_models)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
