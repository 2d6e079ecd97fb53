"""Imports every built-in aggregator module so each registers itself in ``AGGREGATORS``."""

from aggregators import synthesis, vote  # noqa: F401
