"""Benchmarks of issue 7 (`make bench`): scenarios measured against same-run baselines. Not tests."""
