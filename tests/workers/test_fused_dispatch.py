"""Fused groups and dispatchers (unit, fakes): a group's models must live in ONE process."""

from __future__ import annotations

import fakeredis
import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.errors import DispatchError
from workers.celery_dispatch import CeleryDispatcher
from workers.fleet import beat
from workers.fusion.group import FusedJob, FusedMember
from workers.settings import FleetSettings
from workers.store import FleetStore

pytestmark = pytest.mark.unit

JOB = FusedJob(key="r/q0/fuse", kind="token", question="What is 2+2?",
               members=[FusedMember(expert="coder", model="qwen-coder-0.5b"),
                        FusedMember(expert="generalist", model="smollm2-135m")])


def _dispatcher(store: FleetStore) -> CeleryDispatcher:
    return CeleryDispatcher(ExpertRegistry.default(), FleetSettings(poll_s=0.01), store)


def test_workers_that_each_serve_part_of_a_group_are_never_sent_it():
    store = FleetStore(fakeredis.FakeRedis(decode_responses=True))
    beat(store, "w-smol", ["smollm2-135m"], {}, ttl_s=10)
    beat(store, "w-qwen", ["qwen-coder-0.5b"], {}, ttl_s=10)
    with pytest.raises(DispatchError, match="no live worker serves all of qwen-coder-0.5b, smollm2-135m together") as err:
        _dispatcher(store).run_fused([JOB])
    assert "expertmix worker --models qwen-coder-0.5b,smollm2-135m" in str(err.value)


def test_a_worker_serving_the_whole_group_is_found_but_fleet_fusion_says_it_is_not_there_yet():
    store = FleetStore(fakeredis.FakeRedis(decode_responses=True))
    beat(store, "w-both", ["smollm2-135m", "qwen-coder-0.5b"], {}, ttl_s=10)
    with pytest.raises(DispatchError, match="do not run on the worker fleet yet"):
        _dispatcher(store).run_fused([JOB])


def test_local_dispatcher_runs_fused_groups_in_its_process(monkeypatch):
    import workers.fusion.lm as lm_mod
    from tests.workers.fusion_fakes import fake_byte_bpe, fake_lm
    from workers.dispatch import LocalDispatcher
    from workers.pool import ModelPool

    made: dict = {}
    monkeypatch.setattr(lm_mod, "load_lm", lambda spec, device="auto": made.setdefault(
        spec.name, fake_lm(fake_byte_bpe(), name=spec.name, seed=len(made))))
    disp = LocalDispatcher(ModelPool(ExpertRegistry.default().models))
    (res,) = disp.run_fused([JOB.model_copy(update={"max_tokens": 4})])
    assert res.key == JOB.key and res.model == "qwen-coder-0.5b" and set(made) == {"qwen-coder-0.5b", "smollm2-135m"}
