"""Analytics over the trace store: golden signals, prompt analytics, cost and content search.

Entry points (import them from their modules; this package imports nothing itself, so that the
OTLP decoder can use the fingerprint without loading the HTTP layer):
  * `collector.analytics.router.build_analytics_router(state)`: the `/api/v1/...` routes;
  * `collector.analytics.fingerprint.prompt_fingerprint(system_instructions, input_messages)`;
  * `collector.analytics.cost.load_prices(db, path=None)`: price table into SQL, at start;
  * `collector.analytics.search.load_fts(db)`: the FTS extension, at start, before lock-down.
"""
