"""Fakes for skills and skill-router unit tests: a registry over fake-backend models, a fake fleet."""

from __future__ import annotations

from typing import Callable


from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.core import GenerationRequest
from workers.backends.fake import FakeBackend
from workers.dispatch import LocalDispatcher
from workers.pool import ModelPool


def fake_registry() -> ExpertRegistry:
    """Three experts on two fake models (``m1`` shared by ``alpha`` and ``beta``)."""
    return ExpertRegistry.from_dict({
        "models": {"m1": {"backend": "fake", "path": "m1"}, "m2": {"backend": "fake", "path": "m2"}},
        "experts": {
            "alpha": {"model": "m1", "system_prompt": "You are alpha."},
            "beta": {"model": "m1", "system_prompt": "You are beta."},
            "gamma": {"model": "m2", "system_prompt": "You are gamma.", "cost": 2.0},
        },
        "aggregator_model": "m2",
    })


class FakeFleet:
    """Builds FakeBackends answering with ``reply(request, sample_index)``; keeps every one made."""

    def __init__(self, reply: Callable[[GenerationRequest, int], str], fail_on: str | None = None) -> None:
        self.reply, self.fail_on = reply, fail_on
        self.made: list[FakeBackend] = []

    def __call__(self, spec):
        backend = FakeBackend(spec, answers=self.reply, fail_on=self.fail_on)
        self.made.append(backend)
        return backend

    def requests(self) -> int:
        return sum(len(b) for fake in self.made for b in fake.batches)


def fake_ctx(reply, *, fail_on: str | None = None, seed: int = 0) -> tuple[RunContext, FakeFleet]:
    """A run context whose dispatcher runs FakeBackends in a real ModelPool + LocalDispatcher."""
    reg = fake_registry()
    fleet = FakeFleet(reply, fail_on)
    pool = ModelPool(reg.models, budget_gib=100, backend_factory=fleet)
    return RunContext(registry=reg, dispatcher=LocalDispatcher(pool), seed=seed), fleet


