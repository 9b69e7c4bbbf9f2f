"""Helpers of the agent-overhead benchmark (`bench/agent_overhead.py`): processes and load."""
