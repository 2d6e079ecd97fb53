"""``GET /metrics`` (orchestrator/faces/gateway/metrics.py) on the REAL gateway in a subprocess: values change
after real requests (litellm experts on the fake OpenAI server, see served.py)."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.orchestrator.faces.served import client, fake, gateway  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    r = httpx.get(f"{base}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_count_requests_latency_tokens_routing_loads_and_batches(gateway, client):
    before = scrape(gateway.base)
    ask = dict(model="expertmix", messages=[{"role": "user", "content": "What is six times seven?"}])
    plain = client.chat.completions.create(**ask)
    list(client.chat.completions.create(stream=True, **ask))
    assert httpx.post(f"{gateway.base}{CHAT}", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}).status_code == 400
    after = scrape(gateway.base)

    assert delta(before, after, "expertmix_requests_total", route=CHAT, status="200") == 2
    assert delta(before, after, "expertmix_requests_total", route=CHAT, status="400") == 1
    assert delta(before, after, "expertmix_request_seconds_count", route=CHAT) == 3
    assert delta(before, after, "expertmix_request_seconds_sum", route=CHAT) > 0.3, "two answers of ~12 words at 40 ms"
    assert delta(before, after, "expertmix_time_to_first_token_seconds_count") == 1, "only the streamed request"
    assert delta(before, after, "expertmix_tokens_total", kind="completion") == 2 * plain.usage.completion_tokens > 0
    assert delta(before, after, "expertmix_routing_decisions_total", expert="one") == 2
    assert delta(before, after, "expertmix_routing_decisions_total", expert="two") == 2
    assert delta(before, after, "expertmix_batch_size_count", model="alpha") == 4, "experts + synthesis, twice"
    assert delta(before, after, "expertmix_batch_size_count", model="beta") == 2
    assert after[("expertmix_model_loads_total", (("model", "alpha"),))] == 1, "loaded once, reused"
    assert after[("expertmix_queue_depth", ())] == 0
    assert after[("expertmix_requests_in_flight", ())] == 1, "the scrape itself"
