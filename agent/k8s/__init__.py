"""Kubernetes helpers for the node agent: process -> container -> pod."""
