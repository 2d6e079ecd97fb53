"""The Celery fleet for real: a private Redis server and two worker processes with vLLM engines.

One module-scoped fleet (SmolLM2 worker + Gemma worker) serves every test here; tests run in file
order and the fault test, which replaces the SmolLM2 worker and restarts Redis, runs last.
"""

from __future__ import annotations

import threading
import time

import pytest

from orchestrator.errors import DispatchError
from orchestrator.core import GenerationRequest, Sampling
from workers import jobs
from workers.harness import LocalFleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMOL, GEMMA, QWEN = "smollm2-135m", "gemma3-270m", "qwen-coder-0.5b"
FLEET_ENV = {
    "EXPERTMIX_VISIBILITY_TIMEOUT_S": "20",   # a lost worker's batch comes back after 20 s
    "EXPERTMIX_RESTORE_INTERVAL_S": "2",
    "EXPERTMIX_HEARTBEAT_S": "1",
    "EXPERTMIX_WORKER_TTL_S": "6",
    "EXPERTMIX_NO_WORKER_GRACE_S": "600",     # the fault test waits for a replacement worker
    "EXPERTMIX_MAX_WAIT_MS": "1000",
    "EXPERTMIX_RESULT_TIMEOUT_S": "900",
    "EXPERTMIX_VLLM_KV_CACHE_MIB": "128",
}


def chat(run: str, n: int, model: str = SMOL, max_tokens: int = 8) -> list[GenerationRequest]:
    return [GenerationRequest(key=f"{run}/q{i}/generalist", model=model,
                              messages=[{"role": "user", "content": f"What is {i} plus {i}?"}],
                              sampling=Sampling(max_tokens=max_tokens)) for i in range(n)]


def completion(run: str, n: int) -> list[GenerationRequest]:
    return [GenerationRequest(key=f"{run}/q{i}/encyclopedia", model=GEMMA,
                              prompt=f"Question: What is the capital of France?\nAnswer:",
                              sampling=Sampling(max_tokens=6)) for i in range(n)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, models_ready):
    with LocalFleet.start(tmp_path_factory.mktemp("fleet"), env=FLEET_ENV) as f:
        f.smol = f.start_worker([SMOL])
        f.start_worker([GEMMA])
        f.wait_live([SMOL, GEMMA], timeout_s=900)
        yield f


@pytest.fixture(scope="module")
def dispatcher(fleet):
    d = fleet.dispatcher()
    yield d
    d.close()


def _worker_batches(fleet, model: str) -> int:
    from workers.fleet import all_workers

    return sum(w.get("batches", 0) for w in all_workers(fleet.store(), [model], ttl_s=6) if model in w["models"])


def test_two_workers_serve_their_own_models(fleet, dispatcher):
    out = dispatcher.run_batches({SMOL: chat("two", 2), GEMMA: completion("two", 2)})
    assert sorted(out) == sorted([q.key for q in chat("two", 2)] + [q.key for q in completion("two", 2)])
    assert all(c.text.strip() for c in out.values())
    assert {c.model for c in out.values()} == {SMOL, GEMMA}
    shown = jobs.show_run(fleet.store(), "two")
    workers_by_model = {b["model"]: b["worker"] for b in shown["batches"]}
    assert set(workers_by_model) == {SMOL, GEMMA} and len(set(workers_by_model.values())) == 2
    assert dispatcher.model_loads() == {SMOL: 1, GEMMA: 1}  # loaded once, at worker start


def test_concurrent_runs_for_one_model_share_one_generate_call(fleet, dispatcher):
    before = _worker_batches(fleet, SMOL)
    barrier, outs = threading.Barrier(2), {}

    def run(name: str) -> None:
        barrier.wait()
        outs[name] = fleet.dispatcher().run_batches({SMOL: chat(name, 3)})

    threads = [threading.Thread(target=run, args=(n,)) for n in ("coalA", "coalB")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert len(outs["coalA"]) == 3 and len(outs["coalB"]) == 3
    batches = jobs.show_run(fleet.store(), "coalA")["batches"]
    assert [(b["runs"], b["size"]) for b in batches] == [(["coalA", "coalB"], 6)]
    deadline = time.monotonic() + 15  # the worker publishes its counter with its heartbeat
    while _worker_batches(fleet, SMOL) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _worker_batches(fleet, SMOL) == before + 1  # one backend generate call for both runs


def test_a_model_without_a_live_worker_fails_fast(dispatcher):
    t0 = time.monotonic()
    with pytest.raises(DispatchError, match=f"expertmix worker --models {QWEN}"):
        dispatcher.run_batches({QWEN: chat("noqwen", 1, model=QWEN)})
    assert time.monotonic() - t0 < 5


SMALL_REGISTRY = {
    "models": {
        SMOL: {"backend": "vllm", "local": "smollm2-135m-instruct", "memory_gib": 1.9},
        GEMMA: {"backend": "vllm", "local": "gemma3-270m", "chat": False, "memory_gib": 3.5},
    },
    "aggregator_model": SMOL,
    "experts": {
        "generalist": {"model": SMOL, "skills": ["general knowledge"], "sampling": {"max_tokens": 12}},
        "physician": {"model": SMOL, "skills": ["medicine"], "sampling": {"max_tokens": 12}},
        "encyclopedia": {"model": GEMMA, "skills": ["geography", "history"],
                         "system_prompt": "The following are questions with short, factual answers.",
                         "sampling": {"max_tokens": 8, "stop": ["\n"]}},
    },
}


def test_cli_ask_with_the_celery_executor_then_jobs_show(fleet, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    reg = tmp_path / "experts.yaml"
    reg.write_text(yaml.safe_dump(SMALL_REGISTRY))
    exe = str(Path(sys.executable).with_name("expertmix"))
    ask = subprocess.run([exe, "ask", "What is the capital of Italy?", "--pipeline", "ensemble-vote",
                          "--executor", "celery", "--experts", str(reg), "--json"],
                         env=fleet.env(), capture_output=True, text=True, timeout=600)
    assert ask.returncode == 0, ask.stderr[-2000:]
    result = json.loads(ask.stdout)
    answers = result["trace"]["answers"]
    assert result["status"] == "ok" and answers and result["answer"].strip()
    used = {a["model"] for a in answers}
    assert result["trace"]["model_loads"] == {m: 1 for m in used}  # the workers' loads, at their start
    listed = subprocess.run([exe, "jobs", "list", "--json"], env=fleet.env(), capture_output=True, text=True,
                            timeout=120)
    newest = json.loads(listed.stdout)[0]
    assert newest["status"] == "done" and newest["done"] == newest["requested"] == len(answers)
    shown = subprocess.run([exe, "jobs", "show", newest["run"], "--answers", "--json"], env=fleet.env(),
                           capture_output=True, text=True, timeout=120)
    assert {b["model"] for b in json.loads(shown.stdout)["batches"]} == used


def test_a_streamed_request_whose_client_leaves_is_aborted_in_the_workers_vllm_engine(fleet, dispatcher):
    long = GenerationRequest(key="va/q0/generalist", model=SMOL, sampling=Sampling(max_tokens=300),
                             messages=[{"role": "user", "content": "Count from 1 to 300, one number per line."}])
    kept = GenerationRequest(key="va/q1/generalist", model=SMOL, sampling=Sampling(max_tokens=24),
                             messages=[{"role": "user", "content": "What is 2 plus 2?"}])
    deltas: dict[str, list[str]] = {}

    def on_delta(key: str, text: str) -> bool:
        deltas.setdefault(key, []).append(text)
        return not (key == long.key and "".join(deltas[key]))  # that client hangs up at its first token

    out = dispatcher.run_batches({SMOL: [long, kept]}, on_delta=on_delta)
    assert out[long.key].cancelled
    assert out[kept.key].text and not out[kept.key].cancelled
    assert "".join(deltas[kept.key]) == out[kept.key].text  # the other stream got all of its answer
    deadline, stored = time.monotonic() + 60, {}
    while long.key not in stored and time.monotonic() < deadline:  # what the worker itself recorded
        stored = dispatcher.store.results("va", [long.key])
        time.sleep(0.2)
    assert stored[long.key].cancelled and stored[long.key].completion_tokens < 150, stored  # aborted, not run out


def test_a_fused_group_runs_on_the_worker_that_serves_all_its_models(fleet, dispatcher):
    from workers.fusion.group import FusedJob, FusedMember, run_fused_jobs
    from orchestrator.config import ExpertRegistry

    def job(key, *models):
        return FusedJob(key=key, kind="token", question="What is 2 plus 3?", max_tokens=12, weights="uniform",
                        members=[FusedMember(expert="generalist", model=m, system="Answer briefly.") for m in models])

    # SmolLM2 fused with itself on the SmolLM2 worker (its child loads SmolLM2 with transformers)
    (fleet_res,) = dispatcher.run_fused([job("fz/q0/fuse", SMOL, SMOL)])
    (local_res,) = run_fused_jobs([job("local/q0/fuse", SMOL)], ExpertRegistry.default().model)
    assert fleet_res.text and fleet_res.text == local_res.text  # = the single model's greedy answer
    assert fleet_res.weights == [0.5, 0.5] and "fused over 2 models" in fleet_res.notes[0]
    # SmolLM2 + Gemma: each worker serves only part of the group, so neither is sent it
    with pytest.raises(DispatchError, match="no live worker serves all of"):
        dispatcher.run_fused([job("fz/q1/fuse", SMOL, GEMMA)])


def test_kill_9_mid_batch_and_a_redis_restart_lose_and_duplicate_nothing(fleet, dispatcher):
    store = fleet.store()
    first, queued = chat("fault1", 6, max_tokens=32), chat("fault2", 3)
    dispatcher.submit({SMOL: first})
    batch_id = _wait_running(store, "fault1")
    fleet.kill_worker(fleet.smol)  # kill -9 the worker (parent and pool child) mid-batch
    assert jobs.run_summary(store, "fault1")["done"] == 0
    dispatcher.submit({SMOL: queued})  # queued while no worker serves the model
    fleet.kill_redis()  # no clean shutdown: only the append-only file keeps the queues
    fleet.start_redis()
    fleet.smol = fleet.start_worker([SMOL], log_name="worker-smol-replacement.log")
    out = dispatcher.wait({SMOL: first + queued}, label="fault")
    for run, reqs in (("fault1", first), ("fault2", queued)):
        summary = jobs.run_summary(store, run)
        assert summary["done"] == summary["requested"] == len(reqs) and summary["failed"] == 0
        assert sorted(store.r.hkeys(store.k("run", run, "results"))) == sorted(q.key for q in reqs)
    assert set(out) == {q.key for q in first + queued}
    assert int(store.batch(batch_id)["attempts"]) >= 2  # the killed batch was redelivered and rerun


def _wait_running(store, run: str, timeout_s: float = 300) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for batch_id in store.r.smembers(store.k("run", run, "batches")):
            if store.batch(batch_id).get("status") == "running":
                time.sleep(0.5)  # well inside generate (32 tokens x 6 prompts take seconds here)
                return batch_id
        time.sleep(0.05)
    raise AssertionError(f"no batch of {run} started within {timeout_s}s")
