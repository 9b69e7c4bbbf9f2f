"""Finds the inference engines on this node and keeps their latest saturation readings.

Takes in: candidate endpoints (the node's pod list through an `agent.k8s.pods.PodListSource`,
local listening sockets from `/proc`, and any fixed endpoints), an `httpx.Client` to fetch
with, and an `EngineMonitorConfig`.
Gives out: `snapshot()`, the latest `EngineState` of every endpoint found to be an engine
(vLLM, TGI or SGLang, told apart by their metric prefixes), refreshed every `scrape_period_s`
by one daemon thread, or on demand with `tick()`. The prefix cache hit ratio is filled in from
the engines' token counters where they have no ratio of their own; TGI's model comes from its
`/info` endpoint.
Must not: report a reading of an endpoint whose last scrape failed, probe a port that answered
as something else more often than every `reprobe_s`, or let one slow endpoint stall the rest
(fetches run in a small pool with a short timeout and a size cap).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent.engines import names as n
from agent.engines.discovery import (
    Endpoint,
    endpoints_from_pod_list,
    local_endpoints,
    merge_endpoints,
)
from agent.engines.exposition import (
    EngineReading,
    classify,
    interval_hit_ratio,
    parse_samples,
    readings,
)
from agent.k8s.pods import PodIndex, PodListSource, PodSourceError

log = logging.getLogger(__name__)

_ACCEPT = "text/plain;version=0.0.4;q=1.0, */*;q=0.1"


@dataclass(frozen=True, slots=True)
class EngineMonitorConfig:
    """How often to look and how patiently."""

    scrape_period_s: float = 5.0
    discovery_period_s: float = 30.0
    #: an endpoint that is not an engine (or did not answer) is probed again after this long
    reprobe_s: float = 300.0
    timeout_s: float = 2.0
    max_page_bytes: int = 8 << 20
    #: parallel fetches
    workers: int = 8
    #: look for engines among the local listening sockets
    scan_local: bool = True
    proc_root: Path = Path("/proc")
    #: (pid, command line) -> probe its sockets? Default: engine-looking command lines
    process_filter: Callable[[int, str], bool] | None = None

    def __post_init__(self) -> None:
        for key in ("scrape_period_s", "discovery_period_s", "timeout_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)!r}")
        if self.reprobe_s < 0:
            raise ValueError(f"reprobe_s must be >= 0, got {self.reprobe_s!r}")
        if self.max_page_bytes < 1024:
            raise ValueError(f"max_page_bytes must be >= 1024, got {self.max_page_bytes!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers!r}")


@dataclass(frozen=True, slots=True)
class EngineState:
    """One engine endpoint at its latest successful scrape."""

    endpoint: Endpoint
    engine: str
    readings: tuple[EngineReading, ...]
    scraped_unix_ns: int


@dataclass(slots=True)
class _Candidate:
    endpoint: Endpoint
    engine: str | None = None
    #: the engine this endpoint was last found to be, kept while it does not answer
    seen_engine: str | None = None
    probed_mono_s: float | None = None
    model: str | None = None  # TGI: from /info
    counters: dict[str | None, tuple[float, float]] = field(default_factory=dict)


class PageError(Exception):
    """A page could not be fetched or read."""


class EngineMonitor:
    """Discovery, probing and scraping of inference engines on one node."""

    def __init__(
        self,
        config: EngineMonitorConfig | None = None,
        *,
        pod_source: PodListSource | None = None,
        static_endpoints: Iterable[Endpoint] = (),
        client: httpx.Client | None = None,
        clock_mono_s: Callable[[], float] = time.monotonic,
        clock_unix_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config or EngineMonitorConfig()
        self._pod_source = pod_source
        self._static = list(static_endpoints)
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=self.config.timeout_s)
        self._clock_mono_s = clock_mono_s
        self._clock_unix_ns = clock_unix_ns
        self._pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="engine-scrape")
        self._lock = threading.Lock()
        self._candidates: dict[tuple[str, int], _Candidate] = {}
        self._states: dict[tuple[str, int], EngineState] = {}
        self._discovered_mono_s: float | None = None
        self._pod_list: Mapping[str, Any] = {"items": []}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: failed scrapes of known engines, by engine
        self.scrape_errors: dict[str, int] = {}
        self.discovery_errors = 0
        #: pod list reads that failed (the last good list is used meanwhile)
        self.pod_list_errors = 0

    # ---- discovery ----

    def candidates(self) -> list[Endpoint]:
        """Every endpoint worth probing now: pods first (they name their pod), then local
        sockets, then fixed endpoints."""
        if self._pod_source is not None:
            try:
                self._pod_list = self._pod_source.pod_list()
            except PodSourceError as err:
                # a kubelet restart must not make the node's engines disappear
                self.pod_list_errors += 1
                level = logging.WARNING if self.pod_list_errors == 1 else logging.DEBUG
                log.log(level, "reading the pod list failed, keeping the last one: %s", err)
        pod_list = self._pod_list
        from_pods = endpoints_from_pod_list(pod_list)
        local: list[Endpoint] = []
        if self.config.scan_local:
            try:
                containers = PodIndex.from_pod_list(pod_list).by_container
            except PodSourceError:
                containers = {}
            local = local_endpoints(
                self.config.proc_root,
                process_filter=self.config.process_filter,
                containers=containers,
            )
        return merge_endpoints(from_pods, local, self._static)

    def discover(self) -> None:
        """Refresh the candidate list; endpoints that went away are forgotten."""
        try:
            found = self.candidates()
        except Exception:
            # keep the endpoints known so far: discovery fails rarely and recovers by itself
            self.discovery_errors += 1
            log.exception("engine discovery failed")
            return
        with self._lock:
            fresh: dict[tuple[str, int], _Candidate] = {}
            for ep in found:
                have = self._candidates.get(ep.key)
                if have is not None:
                    have.endpoint = ep
                    fresh[ep.key] = have
                else:
                    fresh[ep.key] = _Candidate(ep)
            self._candidates = fresh
            self._states = {k: v for k, v in self._states.items() if k in fresh}
            self._discovered_mono_s = self._clock_mono_s()

    # ---- fetching ----

    def _get(self, url: str) -> str:
        try:
            with self._client.stream(
                "GET", url, headers={"Accept": _ACCEPT}, timeout=self.config.timeout_s
            ) as resp:
                if resp.status_code != 200:
                    raise PageError(f"HTTP {resp.status_code}")
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > self.config.max_page_bytes:
                        raise PageError(f"page larger than {self.config.max_page_bytes} bytes")
        except httpx.HTTPError as err:
            raise PageError(str(err) or type(err).__name__) from err
        return body.decode("utf-8", "replace")

    def _tgi_model(self, ep: Endpoint) -> str | None:
        try:
            info = json.loads(self._get(ep.base_url + "/info"))
        except (PageError, ValueError):
            return None
        model = info.get("model_id") if isinstance(info, dict) else None
        return str(model) if model else None

    def _read(self, cand: _Candidate) -> tuple[str | None, list[EngineReading]]:
        """Fetch and read one endpoint: (engine or None, readings). Raises PageError."""
        text = self._get(cand.endpoint.url)
        try:
            samples = parse_samples(text)
        except ValueError as err:
            raise PageError(f"not Prometheus text: {err}") from err
        engine = classify(samples)
        if engine is None:
            return None, []
        found = readings(engine, samples)
        if engine == n.TGI:
            if cand.model is None:
                cand.model = self._tgi_model(cand.endpoint)
            found = [dataclasses.replace(r, model=r.model or cand.model) for r in found]
        return engine, found

    def _with_hit_ratio(
        self, cand: _Candidate, found: list[EngineReading]
    ) -> tuple[EngineReading, ...]:
        out: list[EngineReading] = []
        for r in found:
            if (
                r.prefix_cache_hit_ratio is None
                and r.prefix_cache_hits_tokens is not None
                and r.prefix_cache_queries_tokens is not None
            ):
                current = (r.prefix_cache_hits_tokens, r.prefix_cache_queries_tokens)
                ratio = interval_hit_ratio(cand.counters.get(r.model), current)
                cand.counters[r.model] = current
                r = dataclasses.replace(r, prefix_cache_hit_ratio=ratio)
            out.append(r)
        return tuple(out)

    def _visit(self, cand: _Candidate, now_mono_s: float) -> None:
        """Probe (unknown endpoint) or scrape (known engine) one candidate."""
        known = cand.engine
        try:
            engine, found = self._read(cand)
        except PageError as err:
            with self._lock:
                self._states.pop(cand.endpoint.key, None)
                if known is not None:
                    self.scrape_errors[known] = self.scrape_errors.get(known, 0) + 1
                    log.debug("scraping %s (%s) failed: %s", cand.endpoint.url, known, err)
                    # an engine that stops answering is probed at every discovery round until
                    # it is back or gone (a restarting engine takes minutes to load a model)
                    cand.engine = None
                    cand.model = None
                    cand.counters.clear()
                cand.probed_mono_s = now_mono_s
            return
        state = None
        if engine is not None:
            if known is None:
                log.info("found %s metrics at %s", engine, cand.endpoint.url)
            state = EngineState(
                cand.endpoint, engine, self._with_hit_ratio(cand, found), self._clock_unix_ns()
            )
        with self._lock:
            cand.engine = engine
            cand.seen_engine = engine or cand.seen_engine
            cand.probed_mono_s = now_mono_s
            if state is None:
                self._states.pop(cand.endpoint.key, None)
            else:
                self._states[cand.endpoint.key] = state

    def _due(self, cand: _Candidate, now_mono_s: float) -> bool:
        if cand.engine is not None or cand.probed_mono_s is None:
            return True
        wait_s = (
            self.config.discovery_period_s
            if cand.seen_engine is not None
            else self.config.reprobe_s
        )
        return now_mono_s - cand.probed_mono_s >= wait_s

    def tick(self) -> list[EngineState]:
        """Discover when due, scrape every known engine, probe what is due; return the
        snapshot."""
        now = self._clock_mono_s()
        last = self._discovered_mono_s
        if last is None or now - last >= self.config.discovery_period_s:
            self.discover()
        with self._lock:
            due = [c for c in self._candidates.values() if self._due(c, now)]
        for future in [self._pool.submit(self._visit, c, now) for c in due]:
            future.result()
        return self.snapshot()

    def snapshot(self) -> list[EngineState]:
        """The latest state of every engine whose last scrape succeeded."""
        with self._lock:
            return sorted(self._states.values(), key=lambda s: s.endpoint.key)

    def endpoints_known(self) -> int:
        with self._lock:
            return len(self._candidates)

    # ---- thread ----

    def start(self) -> None:
        """Scrape on a daemon thread every `scrape_period_s` until `stop()`."""
        if self._thread is not None or self._closed:
            return
        self._thread = threading.Thread(target=self._run, name="infersight-engines", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = self.config.scrape_period_s
        while not self._stop.is_set():
            started = self._clock_mono_s()
            try:
                self.tick()
            except Exception:
                log.exception("engine scrape round failed")
            self._stop.wait(max(0.0, period - (self._clock_mono_s() - started)))

    def stop(self) -> None:
        """Stop the thread and release connections; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=True)
            if self._own_client:
                self._client.close()
