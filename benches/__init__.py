"""Benchmarks of the product (`make bench`, `make bench-links`): tools that run it and measure
it, not part of the installed package."""
