"""Helpers for tests and benchmarks (seeded, calibrated random weights; synthetic images).

Not used by any ``nuim`` command; shipped with the package so that tests and ``bench/`` build the
same well-conditioned random models without the released checkpoints.
"""
