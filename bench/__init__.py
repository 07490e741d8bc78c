"""Benchmarks (not part of the hub package). See bench/README.md."""
