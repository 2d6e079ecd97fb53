"""The Batch API (orchestrator/faces/gateway/batches.py) against the REAL gateway in a subprocess,
driven with the official `openai` client: round trip, a gateway killed mid-job and restarted on
the same batch directory, cancel, and the size limits.

The experts are real litellm experts on the fake OpenAI server (served.py); `--max-batch 1` makes
the lines run one after another (about 1 s each: two experts and a synthesis, 40 ms per word), so
a job is still running when the test kills or cancels it.
"""

from __future__ import annotations

import json
import signal
import time

import httpx
import openai
import pytest

from tests.orchestrator.faces.served import Served, fake, fake_registry, fixed_pipeline  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def _lines(n: int, *, bad_model_at: int | None = None) -> bytes:
    rows = []
    for i in range(n):
        body = {"model": "gpt-4o" if i == bad_model_at else "expertmix",
                "messages": [{"role": "user", "content": f"Question number {i}: what is {i} plus {i}?"}]}
        rows.append(json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}))
    return ("\n".join(rows) + "\n").encode()


@pytest.fixture(scope="module")
def served_factory(fake, tmp_path_factory):
    """Starts gateways on one batch directory; stops them all at the end of the module."""
    tmp_path = tmp_path_factory.mktemp("batches")
    registry = fake_registry(tmp_path, fake.base_url)
    pipeline = fixed_pipeline(tmp_path, "duo", ["one", "two"])
    started: list[Served] = []

    def start(port: int | None = None) -> Served:
        served = Served(["--experts", str(registry), "--pipeline", str(pipeline), "--max-batch", "1",
                         "--batch-dir", str(tmp_path / "batches")], tmp_path / "serve.log",
                        env={"FAKE_OPENAI_KEY": "sk-fake"}, port=port).start()
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


@pytest.fixture(scope="module")
def shared(served_factory):
    """One gateway for the tests that need no restart (a gateway start costs ~10 s on 2 cores)."""
    return served_factory()


def _client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.base}/v1", api_key="unused", max_retries=0)


def _wait(client, batch_id: str, until, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if until(batch):
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} never reached the state: last {batch.status} {batch.request_counts}")


def _results(client, file_id: str) -> list[dict]:
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_batch_round_trip_with_a_failing_line(shared):
    client = _client(shared)
    upload = client.files.create(file=("in.jsonl", _lines(4, bad_model_at=2)), purpose="batch")
    assert upload.id.startswith("file-") and upload.purpose == "batch" and upload.bytes > 0
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"owner": "test"})
    assert batch.request_counts.total == 4 and batch.metadata == {"owner": "test"}
    batch = _wait(client, batch.id, lambda b: b.status == "completed")
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 1)

    output = _results(client, batch.output_file_id)
    assert sorted(r["custom_id"] for r in output) == ["req-0", "req-1", "req-3"]
    direct = client.chat.completions.create(model="expertmix",
                                            messages=[{"role": "user", "content": "Question number 1: what is 1 plus 1?"}])
    by_id = {r["custom_id"]: r["response"] for r in output}
    assert by_id["req-1"]["status_code"] == 200
    assert by_id["req-1"]["body"]["choices"][0]["message"]["content"] == direct.choices[0].message.content
    (error,) = _results(client, batch.error_file_id)
    assert error["custom_id"] == "req-2" and error["response"]["status_code"] == 400
    assert "unknown pipeline" in error["response"]["body"]["error"]["message"]
    assert batch.id in [b.id for b in client.batches.list().data]


def test_a_gateway_killed_mid_job_resumes_it_after_restart(served_factory, fake):
    first = served_factory()
    client = _client(first)
    upload = client.files.create(file=("in.jsonl", _lines(8)), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    _wait(client, batch.id, lambda b: b.request_counts.completed >= 2)
    first.stop(signal.SIGKILL)  # a crash: no shutdown hook runs
    calls_at_kill = fake.stats["requests"]

    second = served_factory(port=first.port)
    client = _client(second)
    before_resume = client.batches.retrieve(batch.id)
    assert before_resume.status in ("in_progress", "completed"), "the job survived the crash on disk"
    done = before_resume.request_counts.completed
    batch = _wait(client, batch.id, lambda b: b.status == "completed")
    assert batch.request_counts.completed == 8 and batch.request_counts.failed == 0
    output = _results(client, batch.output_file_id)
    assert sorted(r["custom_id"] for r in output) == [f"req-{i}" for i in range(8)], "each line exactly once"
    # 3 provider calls per line (two experts, one synthesis): only the lines not done at the crash ran again
    assert fake.stats["requests"] - calls_at_kill <= 3 * (8 - done)


def test_cancel_stops_the_job_and_keeps_what_was_done(shared, fake):
    client = _client(shared)
    # enough lines that the job is still running when the cancel lands (the gateway's hot path got
    # faster: 8 lines once finished between two polls)
    upload = client.files.create(file=("in.jsonl", _lines(400)), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    _wait(client, batch.id, lambda b: b.request_counts.completed >= 1)
    assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    batch = _wait(client, batch.id, lambda b: b.status == "cancelled", timeout_s=30)
    calls = fake.stats["requests"]
    time.sleep(1.5)
    assert fake.stats["requests"] == calls, "no line started after the cancel"
    assert 1 <= batch.request_counts.completed < 400
    kept = _results(client, batch.output_file_id)
    assert len(kept) == batch.request_counts.completed
    assert all(r["response"]["status_code"] == 200 and r["response"]["body"]["choices"][0]["message"]["content"]
               for r in kept)


def test_bad_files_and_unknown_ids_get_clear_4xx(shared):
    served = shared
    client = _client(served)
    with pytest.raises(openai.BadRequestError, match=r"line 2: not JSON"):
        client.files.create(file=("in.jsonl", b'{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "x"}]}}\n{oops\n'),
                            purpose="batch")
    with pytest.raises(openai.BadRequestError, match=r"line 2: custom_id .*a.* repeats"):
        line = b'{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "x"}]}}\n'
        client.files.create(file=("in.jsonl", line * 2), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="more than 10000"):
        client.files.create(file=("in.jsonl", _lines(10_001)), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("in.jsonl", _lines(1)), purpose="fine-tune")
    r = httpx.post(f"{served.base}/v1/files", files={"file": ("big.jsonl", b"x" * (21 * 1024 * 1024))},
                   data={"purpose": "batch"}, timeout=60)
    assert r.status_code == 413 and "split the batch file" in r.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_" + "0" * 24)
    with pytest.raises(openai.NotFoundError):
        client.files.content("../../etc/passwd")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-" + "0" * 24, endpoint="/v1/chat/completions", completion_window="24h")
