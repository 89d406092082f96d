"""Benchmarks: scripts that print timings and ratios (`python -m hyperx_jax.benchmarks.<name>`)."""
