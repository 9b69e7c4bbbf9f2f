"""Parts of the ingest benchmark (`bench/ingest.py`): load, senders, targets and the report.

The leading underscore keeps `bench/run.py` from taking this package for a benchmark.
"""
