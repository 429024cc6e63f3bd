"""Benchmarks: pytest-benchmark suites (test_*.py) and the models.py script."""
