"""GenAI call extraction: captured HTTP exchanges in, provider-neutral `InferenceCall`s out.

`registry.parse_exchange` is the entry point; `providers/` holds one parser per API; `content`
builds the semantic-convention message structures; `wire` and `jsonvalue` are the shared,
never-raising readers of exchanges and JSON.
"""
