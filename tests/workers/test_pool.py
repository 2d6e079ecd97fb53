"""ModelPool over FakeBackend: load once, LRU eviction under the budget, counts, thread safety."""

from __future__ import annotations

import threading

import pytest

from orchestrator.config import ModelSpec
from orchestrator.errors import UnknownNameError
from orchestrator.core import GenerationRequest
from workers.backends.fake import FakeBackend
from workers.pool import ModelPool

pytestmark = pytest.mark.unit


def _specs(**gib: float) -> dict[str, ModelSpec]:
    return {name: ModelSpec(name=name, backend="fake", path=name, memory_gib=g) for name, g in gib.items()}


class FakeFactory:
    """Makes FakeBackends and keeps every one it made, per model."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.made: dict[str, list[FakeBackend]] = {}

    def __call__(self, spec: ModelSpec) -> FakeBackend:
        backend = FakeBackend(spec, **self.kwargs)
        self.made.setdefault(spec.name, []).append(backend)
        return backend


def _req(model: str, i: int = 0) -> GenerationRequest:
    return GenerationRequest(key=f"{model}/{i}", model=model, messages=[{"role": "user", "content": f"q{i}"}])


def test_a_model_is_loaded_once_and_reused():
    factory = FakeFactory()
    pool = ModelPool(_specs(a=1, b=1), budget_gib=4, backend_factory=factory)
    for i in range(3):
        pool.generate("a", [_req("a", i)])
    assert pool.loads == {"a": 1}
    assert len(factory.made["a"]) == 1
    assert factory.made["a"][0].count("generate") == 3
    assert pool.resident() == ["a"]


def test_least_recently_used_model_is_evicted_when_the_budget_is_full():
    factory = FakeFactory()
    pool = ModelPool(_specs(a=2, b=2, c=2), budget_gib=4.5, backend_factory=factory)
    pool.generate("a", [_req("a")])
    pool.generate("b", [_req("b")])
    pool.generate("a", [_req("a")])  # a is now the most recently used
    pool.generate("c", [_req("c")])  # must evict b, not a
    assert pool.resident() == ["a", "c"]
    assert factory.made["b"][0].count("unload") == 1
    assert not factory.made["b"][0].loaded
    assert factory.made["a"][0].count("unload") == 0
    assert pool.used_gib() == pytest.approx(4)


def test_reloading_an_evicted_model_counts_a_second_load():
    factory = FakeFactory()
    pool = ModelPool(_specs(a=3, b=3), budget_gib=4, backend_factory=factory)
    for model in ["a", "b", "a"]:
        pool.generate(model, [_req(model)])
    assert pool.loads == {"a": 2, "b": 1}
    assert len(factory.made["a"]) == 2
    assert set(pool.load_seconds) == {"a", "b"}


def test_a_model_larger_than_the_budget_still_loads_alone():
    pool = ModelPool(_specs(a=1, big=10), budget_gib=4, backend_factory=FakeFactory())
    pool.generate("a", [_req("a")])
    pool.generate("big", [_req("big")])
    assert pool.resident() == ["big"]


def test_release_all_unloads_everything_and_context_manager_releases():
    factory = FakeFactory()
    with ModelPool(_specs(a=1, b=1), budget_gib=4, backend_factory=factory) as pool:
        pool.generate("a", [_req("a")])
        pool.generate("b", [_req("b")])
        assert sorted(pool.resident()) == ["a", "b"]
    assert pool.resident() == []
    assert all(not b.loaded and b.count("unload") == 1 for made in factory.made.values() for b in made)


def test_unknown_model_names_the_choices():
    pool = ModelPool(_specs(a=1, b=1), budget_gib=4, backend_factory=FakeFactory())
    with pytest.raises(UnknownNameError, match=r"unknown model 'zz'.*use one of: a, b"):
        pool.generate("zz", [_req("zz")])


def test_empty_batch_loads_nothing():
    pool = ModelPool(_specs(a=1), budget_gib=4, backend_factory=FakeFactory())
    assert pool.generate("a", []) == []
    assert pool.loads == {}


def test_concurrent_generate_loads_once_and_never_overlaps_on_one_engine():
    factory = FakeFactory(delay_s=0.01)
    pool = ModelPool(_specs(a=1), budget_gib=4, backend_factory=factory)
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = pool.generate("a", [_req("a", i)])[0].key
        except BaseException as exc:  # surfaced below; a thread must not swallow it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == {i: f"a/{i}" for i in range(16)}
    assert pool.loads == {"a": 1}
    assert factory.made["a"][0].max_concurrent == 1
