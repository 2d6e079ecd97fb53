"""Batch input checks and the on-disk store (orchestrator/faces/gateway/batches.py), no server."""

from __future__ import annotations

import json

import pytest

from orchestrator.errors import InputError
from orchestrator.faces.gateway.batches import BatchStore, NotFound, parse_requests

pytestmark = pytest.mark.unit

GOOD = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "expertmix", "messages": [{"role": "user", "content": "hi"}]}}


def _file(*items) -> bytes:
    return "\n".join(i if isinstance(i, str) else json.dumps(i) for i in items).encode()


@pytest.mark.parametrize("line, why", [
    ("{oops", "not JSON"),
    ("[1]", "not a JSON object"),
    ({**GOOD, "custom_id": ""}, "custom_id"),
    ({**GOOD, "custom_id": "z", "url": "/v1/embeddings"}, "only POST /v1/chat/completions"),
    ({**GOOD, "custom_id": "z", "body": {**GOOD["body"], "stream": True}}, "stream"),
    ({**GOOD, "custom_id": "z", "body": {"model": "expertmix"}}, "body.messages"),
    (GOOD, "repeats"),
])
def test_bad_lines_are_named_with_their_line_number(line, why):
    with pytest.raises(InputError, match=rf"line 2: .*{why}"):
        parse_requests(_file(GOOD, line))


def test_blank_lines_are_skipped_and_empty_files_refused():
    assert [r["custom_id"] for r in parse_requests(_file(GOOD, "", {**GOOD, "custom_id": "b"}))] == ["a", "b"]
    with pytest.raises(InputError, match="no requests"):
        parse_requests(b"\n \n")
    with pytest.raises(InputError, match="not UTF-8"):
        parse_requests(b"\xff\xfe")


def test_store_counts_results_and_ignores_a_line_cut_by_a_crash(tmp_path):
    store = BatchStore(tmp_path)
    assert not tmp_path.joinpath("files").exists(), "nothing is written before the first upload"
    record = store.save_file(_file(GOOD), "in.jsonl", "batch")
    assert store.file_content(record["id"]) == _file(GOOD)
    batch_id = "batch_" + "a" * 24
    store.create_batch({"id": batch_id, "created_at": 1, "status": "in_progress",
                        "request_counts": {"total": 3, "completed": 0, "failed": 0}})
    store.append(batch_id, "output", {"custom_id": "a"})
    store.append(batch_id, "errors", {"custom_id": "b"})
    with store.results_path(batch_id, "output").open("a") as f:
        f.write('{"custom_id": "c", "respo')  # the gateway died mid-write
    assert store.batch(batch_id)["request_counts"] == {"total": 3, "completed": 1, "failed": 1}
    assert store.finished_ids(batch_id) == {"a", "b"}, "c runs again after a restart"
    with pytest.raises(NotFound):
        store.batch("../" + batch_id)
