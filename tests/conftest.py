"""Session-wide fixtures for the whole suite: real local models and one shared model pool.

Integration tests that need a real model use these fixtures instead of starting their own
engines (an engine start costs 7-35 s and 1.5-4 GiB on CPU; the suite must stay lean):

- ``models_ready``: converts the three local models once (cached: milliseconds when done) and
  returns ``{recipe name: folder}``.
- ``real_pool``: ONE :class:`workers.pool.ModelPool` over ``ExpertRegistry.default().models``,
  budget large enough for all three small models, shared by every test of the session and
  released at the end. Get an engine with ``real_pool.acquire("smollm2-135m")`` or run a batch
  with ``real_pool.generate(model, requests)``; build a ``LocalDispatcher(real_pool)`` for
  pipelines. Never call ``release_all()`` on it from a test (other tests would pay the reloads);
  ``release(model)`` is fine when a test must measure a load, the next user reloads it.
  Prefer ``smollm2-135m`` (smallest, fastest start) unless a test is about another model.
- ``smollm_backend``: the pooled SmolLM2 vLLM backend, loaded (function scope: re-acquired from
  the pool each time, so it survives another test releasing it).
"""

from __future__ import annotations

import os

import pytest

# Before anything imports vllm or transformers: in-process engines, no model hub, quiet logs.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SMOLLM = "smollm2-135m"


@pytest.fixture(scope="session")
def models_ready():
    """``{recipe name: folder}`` of the three converted local models (converted once, cached)."""
    from workers.model_setup import ensure_models

    return ensure_models(progress=True)


@pytest.fixture(scope="session")
def real_pool(models_ready):
    """The one shared pool of real vLLM engines over the default registry's models.

    Its budget fits all three small models at once, so nothing is evicted between tests; it is
    released (every engine shut down, memory freed) when the session ends.
    """
    from orchestrator.config import ExpertRegistry
    from workers.pool import ModelPool

    models = ExpertRegistry.default().models
    budget = sum(spec.memory_gib for spec in models.values()) + 1.0
    pool = ModelPool(models, budget_gib=budget)
    try:
        yield pool
    finally:
        pool.release_all()


@pytest.fixture
def smollm_backend(real_pool):
    """The pooled, loaded SmolLM2 vLLM backend (re-acquired per test)."""
    return real_pool.acquire(SMOLLM)
