"""Benchmarks of the provider against baselines measured side by side in the same run (``make bench``)."""
