"""Prometheus metrics: per-app registry, requests by route template, verdicts, SMTP time."""

from __future__ import annotations

import uuid

from prometheus_client.parser import text_string_to_metric_families

from mailvet.api.metrics import method_label

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


async def test_made_up_methods_and_paths_do_not_mint_series(api: Api) -> None:
    for i in range(30):
        await api.client.request(f"FOO{i}", "/v1/validate", headers=api.h())
        await api.client.request(f"BAR{i}", f"/made/up/{i}")
        await api.client.get(f"/made/up/{i}", params={"email": f"{i}@x.test"})
        await api.client.get(f"/v1/batch/{uuid.uuid4()}", headers=api.h())
        await api.client.get(f"/static/docs/nothing-{i}.js")
    got = samples((await api.client.get("/metrics")).text)
    series = [dict(labels) for (name, labels) in got if name == "mailvet_http_requests_total"]
    routes = {labels["route"] for labels in series}
    methods = {labels["method"] for labels in series}
    assert methods <= {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER"}
    assert "OTHER" in methods
    assert routes <= {"/v1/validate", "/v1/batch/{batch_id}", "unmatched", "/static/docs"}
    assert len(series) <= 6  # a fixed handful of series, not one per request


def test_method_label() -> None:
    assert [method_label(m) for m in ("GET", "OPTIONS", "get", "FOO", "", None)] == [
        "GET",
        "OPTIONS",
        "OTHER",
        "OTHER",
        "OTHER",
        "OTHER",
    ]
