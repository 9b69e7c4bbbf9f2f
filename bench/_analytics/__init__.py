"""Helpers of the analytics benchmark (`bench/analytics.py`): seeding and measuring."""
