"""Fakes for unit tests (never used outside tests/). The fake dispatcher ships with the contract
checks in :mod:`orchestrator.testing`, so plug-in authors get the same one."""

from __future__ import annotations

from orchestrator.testing import FakeDispatcher

__all__ = ["FakeDispatcher"]
