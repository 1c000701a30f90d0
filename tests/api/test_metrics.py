"""Prometheus metrics: per-app registry, requests by route template, verdicts, SMTP time."""

from __future__ import annotations

import uuid

from prometheus_client.parser import text_string_to_metric_families

from .kit import Api, running_api


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_count_requests_verdicts_and_smtp_time(api: Api) -> None:
    for email in ("a@deliverable.test", "a@deliverable.test", "NULL"):
        await api.client.get("/v1/validate", params={"email": email}, headers=api.h())
    await api.client.get("/v1/validate", params={"email": "x@y.test"})
    await api.client.get(f"/v1/batch/{uuid.uuid4()}", headers=api.h())
    await api.client.get("/nowhere")
    r = await api.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    got = samples(r.text)

    def requests(route: str, status: str, method: str = "GET") -> float:
        key = (
            "mailvet_http_requests_total",
            (("method", method), ("route", route), ("status", status)),
        )
        return got.get(key, 0.0)

    assert requests("/v1/validate", "200") == 3
    assert requests("/v1/validate", "401") == 1
    assert requests("/v1/batch/{batch_id}", "404") == 1
    assert requests("unmatched", "404") == 1

    def verdicts(result: str, reason: str, source: str) -> float:
        key = (
            "mailvet_verdicts_total",
            (("reason", reason), ("result", result), ("source", source)),
        )
        return got.get(key, 0.0)

    assert verdicts("deliverable", "accepted_email", "api") == 1
    assert verdicts("deliverable", "accepted_email", "cache") == 1
    assert verdicts("undeliverable", "invalid_format", "api") == 1
    assert got[("mailvet_smtp_duration_seconds_count", ())] == 1
    assert got[("mailvet_smtp_duration_seconds_sum", ())] == 0.0035


async def test_each_app_has_its_own_registry() -> None:
    async with running_api() as first, running_api() as second:
        await first.client.get("/healthz")
        text = (await second.client.get("/metrics")).text
    assert 'route="/healthz"' not in text
