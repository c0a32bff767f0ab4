"""Benchmark scripts (not tests): they print timings measured side by side in one run, with their ratios."""
