"""Tests of the node agent: span building, Kubernetes attribution, configuration, end to end."""
