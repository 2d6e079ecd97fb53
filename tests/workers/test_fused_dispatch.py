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


def _fake_fleet_worker(store: FleetStore, sent: list, *, error: str | None = None):
    """A fake send: records the job with its queue and answers it at once, as a worker would."""
    from workers.fusion.group import FusedResult
    from workers.settings import fused_queue_name

    def send(job):
        sent.append((fused_queue_name(job.models), job.key))
        if error:
            store.store_fused_error(job.key, error)
        else:
            store.store_fused(job.key, FusedResult(key=job.key, text="4", model=job.members[0].model,
                                                   weights=[0.5, 0.5]).model_dump_json())
    return send


def test_a_worker_serving_the_whole_group_gets_it_on_the_group_queue_and_a_rerun_reuses_the_answer():
    store = FleetStore(fakeredis.FakeRedis(decode_responses=True))
    beat(store, "w-both", ["smollm2-135m", "qwen-coder-0.5b"], {}, ttl_s=10)
    sent: list = []
    disp = CeleryDispatcher(ExpertRegistry.default(), FleetSettings(poll_s=0.01), store,
                            send_fused=_fake_fleet_worker(store, sent))
    (res,) = disp.run_fused([JOB])
    assert res.text == "4" and sent == [("expertmix.fused.qwen-coder-0.5b+smollm2-135m", JOB.key)]
    assert disp.run_fused([JOB])[0].text == "4" and len(sent) == 1  # answered before: not sent again


def test_a_group_that_fails_on_its_worker_is_a_clear_error_and_is_sent_again_next_time():
    store = FleetStore(fakeredis.FakeRedis(decode_responses=True))
    beat(store, "w-both", ["smollm2-135m", "qwen-coder-0.5b"], {}, ttl_s=10)
    sent: list = []
    failing = CeleryDispatcher(ExpertRegistry.default(), FleetSettings(poll_s=0.01), store,
                               send_fused=_fake_fleet_worker(store, sent, error="OutOfMemoryError: CPU"))
    with pytest.raises(DispatchError, match="fused group 'r/q0/fuse' failed on its worker: OutOfMemoryError"):
        failing.run_fused([JOB])
    ok = CeleryDispatcher(ExpertRegistry.default(), FleetSettings(poll_s=0.01), store,
                          send_fused=_fake_fleet_worker(store, sent))
    assert ok.run_fused([JOB])[0].text == "4" and len(sent) == 2  # the old error was cleared, the job resent


def test_a_group_whose_worker_leaves_gives_up_after_the_grace_period():
    store = FleetStore(fakeredis.FakeRedis(decode_responses=True))
    beat(store, "w-both", ["smollm2-135m", "qwen-coder-0.5b"], {}, ttl_s=10)

    def send_then_die(job):
        store.r.delete(store.k("workers", "smollm2-135m"))  # the only worker of the group is gone
    disp = CeleryDispatcher(ExpertRegistry.default(), FleetSettings(poll_s=0.01, no_worker_grace_s=0.05), store,
                            send_fused=send_then_die)
    with pytest.raises(DispatchError, match="no live worker serves qwen-coder-0.5b,smollm2-135m together any more"):
        disp.run_fused([JOB])


def test_a_worker_listens_on_the_queue_of_every_group_of_its_models():
    from workers.settings import fused_queue_name, fused_queues

    qs = fused_queues(["smollm2-135m", "gemma3-270m", "qwen-coder-0.5b"])
    assert len(qs) == 7 and fused_queue_name(["smollm2-135m", "gemma3-270m"]) in qs
    assert fused_queue_name(["b", "a", "a"]) == fused_queue_name(["a", "b"]) == "expertmix.fused.a+b"
    assert len(fused_queues([f"m{i}" for i in range(6)])) == 6 + 15 + 20 + 15  # subsets up to 4 models


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
