"""Jaeger-compatible query API over the span store
(`collector.jaeger.router.build_jaeger_router`)."""
