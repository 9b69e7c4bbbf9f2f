"""Provider parsers: one module per API family, each with `APIS`, `matches()` and `parse()`.

Listed, in order, by `agent.genai.registry`.
"""
