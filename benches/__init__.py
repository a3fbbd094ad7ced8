"""Benchmarks of the data path: tools that run the product as processes and measure it."""
