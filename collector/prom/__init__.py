"""Prometheus exposition of GenAI metrics computed from the store
(`collector.prom.genai.GenAIStoreCollector`)."""
