"""Benchmarks behind every speed claim: each compares ptm against a baseline in the same run."""
