"""Benchmarks of the product (`make bench`); tools, not part of the installed package."""
