"""Workflow code: deterministic only (no I/O, no wall clock, no unseeded randomness)."""
