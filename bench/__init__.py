"""Benchmarks of the local write and verify paths, of sync between real nodes, and
their report (bench/RESULTS.md).

`python -m bench` runs them all; each prints one JSON line to stdout.
"""
