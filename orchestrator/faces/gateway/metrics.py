"""``GET /metrics``: the gateway's Prometheus metrics (text exposition format, ``prometheus_client``).

Every app gets its own registry (several apps in one process never share counts). What is
measured, and where:

| metric | type | labels | source |
|---|---|---|---|
| ``expertmix_requests_total`` | counter | ``route``, ``status`` | every HTTP request (``GatewayMiddleware``, http.py; ``route`` is the route template, so ids never become labels) |
| ``expertmix_request_seconds`` | histogram | ``route`` | request start to the last byte sent (a stream's whole duration) |
| ``expertmix_requests_in_flight`` | gauge | | requests being served now |
| ``expertmix_time_to_first_token_seconds`` | histogram | | streamed requests: start to the first content chunk |
| ``expertmix_tokens_total`` | counter | ``kind`` (prompt, completion) | ``usage`` of every answered chat completion (streamed or not; batch jobs too) |
| ``expertmix_routing_decisions_total`` | counter | ``expert`` | each expert the router picked for an answered request |
| ``expertmix_model_loads_total`` | counter | ``model`` | the dispatcher's load counts, read at scrape time (in-process pool, or the fleet's live workers) |
| ``expertmix_queue_depth`` | gauge | | chat requests waiting for a run (the local run queue; admitted requests when the gateway has an admission limit) |
| ``expertmix_batch_size`` | histogram | ``model`` | prompts per model batch of the in-process pool (merged requests share one batch) |
"""

from __future__ import annotations

from typing import Any, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class GatewayMetrics:
    """The metrics of one gateway app.

    Example::

        metrics = GatewayMetrics(dispatcher=lambda: orch.dispatcher, queue_depth=lambda: 0)
        metrics.answered({"usage": {"prompt_tokens": 5, "completion_tokens": 7},
                          "expertmix": {"experts": [{"name": "generalist", "score": 1.0}]}})
        text = metrics.exposition().decode()
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, *, dispatcher: Callable[[], Any], queue_depth: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("expertmix_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.seconds = Histogram("expertmix_request_seconds", "HTTP request duration, to the last byte sent",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("expertmix_requests_in_flight", "HTTP requests being served", registry=r)
        self.first_token_s = Histogram("expertmix_time_to_first_token_seconds",
                                       "streamed chat requests: time to the first content chunk",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("expertmix_tokens", "tokens of answered chat completions (their usage)", ["kind"],
                              registry=r)
        self.routed = Counter("expertmix_routing_decisions", "experts picked by the router, per answered request",
                              ["expert"], registry=r)
        r.register(_ScrapeTime(dispatcher, queue_depth))
        self._by_route: dict[tuple[str, int], tuple[Any, Any]] = {}

    # ---- observations ----------------------------------------------------------------------------
    def answered(self, body: dict[str, Any]) -> None:
        """One answered ``chat.completion`` (its ``usage`` and routed experts)."""
        usage = body.get("usage") or {}
        self.tokens.labels("prompt").inc(int(usage.get("prompt_tokens") or 0))
        self.tokens.labels("completion").inc(int(usage.get("completion_tokens") or 0))
        for expert in (body.get("expertmix") or {}).get("experts") or []:
            self.routed.labels(expert["name"]).inc()

    def first_token(self, seconds: float) -> None:
        self.first_token_s.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def finished(self, route: str, status: int, seconds: float) -> None:
        """One HTTP request served (``route`` is its template, ``unmatched`` when no route took it)."""
        children = self._by_route.get((route, status))
        if children is None:  # labels() takes a lock and checks the names: once per (route, status)
            children = self._by_route[(route, status)] = (self.requests.labels(route, str(status)),
                                                          self.seconds.labels(route))
        children[0].inc()
        children[1].observe(seconds)


class _ScrapeTime:
    """Values read when Prometheus scrapes: model loads (the dispatcher counts them), the batch
    sizes the in-process pool recorded, and the queue depth."""

    def __init__(self, dispatcher: Callable[[], Any], queue_depth: Callable[[], int]) -> None:
        self.dispatcher, self.queue_depth = dispatcher, queue_depth

    def collect(self):
        dispatcher = self.dispatcher()
        loads = CounterMetricFamily("expertmix_model_loads", "model (engine) loads so far", labels=["model"])
        try:
            counts = dispatcher.model_loads()
        except Exception:  # noqa: BLE001 (a fleet whose Redis is down: report no loads, not a failed scrape)
            counts = {}
        for model, n in sorted(counts.items()):
            loads.add_metric([model], n)
        yield loads
        yield _batch_histogram(getattr(getattr(dispatcher, "pool", None), "batch_sizes", {}))
        yield GaugeMetricFamily("expertmix_queue_depth", "chat requests waiting for a run", value=self.queue_depth())


def _batch_histogram(sizes: dict[tuple[str, int], int]) -> HistogramMetricFamily:
    """``{(model, size): batches}`` as a Prometheus histogram per model."""
    family = HistogramMetricFamily("expertmix_batch_size", "prompts per model batch (merged requests share one)",
                                   labels=["model"])
    for model in sorted({m for m, _ in sizes}):
        mine = {size: n for (m, size), n in sizes.items() if m == model}
        buckets = [(str(b), sum(n for size, n in mine.items() if size <= b)) for b in BATCH_BUCKETS]
        buckets.append(("+Inf", sum(mine.values())))
        family.add_metric([model], buckets, sum_value=sum(size * n for size, n in mine.items()))
    return family
