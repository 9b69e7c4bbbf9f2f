"""The agent's OpenTelemetry output: captured LLM calls as spans and metrics through the SDK."""
