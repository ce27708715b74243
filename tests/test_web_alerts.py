"""Alert delivery: `GET /api/v1/alerts` per owner, the `alerts` stream channel (real uvicorn, the SDK), and the
webhook against a real loopback HTTP server that fails before it accepts."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
from aiohttp import web

from auth_support import add_user, auth_client, login
from cracktrader.client import AsyncCrackTraderAPI, CrackTraderAPI
from cracktrader.clock import SystemClock
from cracktrader.runs import events
from cracktrader.runs.alerts import Alert, AlertDetails, AlertKind, RunAlerts
from cracktrader.runs.sanitize import redact_url
from cracktrader.settings import Settings
from cracktrader.web.alerts.service import AlertService
from cracktrader.web.alerts.webhook import WebhookPoster
from web_support import LiveServer, app_client

pytestmark = pytest.mark.anyio

RUN_A, RUN_B = "a" * 32, "b" * 32


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def raise_alert(sink: Any, run_id: str, user_id: int | None, kind: AlertKind = AlertKind.BALANCE_DRIFT) -> Alert:
    return RunAlerts(sink, run_id, user_id, SystemClock()).raise_(
        kind, f"{kind} on {run_id[:4]}", AlertDetails(drift={"BTC": 0.5}) if kind is AlertKind.BALANCE_DRIFT else None
    )


async def test_alerts_are_listed_newest_first_paged_and_filtered_by_run_and_kind() -> None:
    async with app_client() as c:
        sink: AlertService = c.app.state.alerts  # type: ignore[attr-defined]
        raised = [
            raise_alert(sink, RUN_A, None, AlertKind.BALANCE_DRIFT),
            raise_alert(sink, RUN_A, None, AlertKind.RATE_BANNED),
            raise_alert(sink, RUN_B, None, AlertKind.SESSION_FAILED),
        ]
        await sink.drain()

        everything = (await c.get("/api/v1/alerts")).json()
        page = (await c.get("/api/v1/alerts", params={"limit": 1, "offset": 1})).json()
        of_a = (await c.get("/api/v1/alerts", params={"run_id": RUN_A})).json()
        banned = (await c.get("/api/v1/alerts", params={"kind": "RATE_BANNED"})).json()
        bad = await c.get("/api/v1/alerts", params={"kind": "NOT_A_KIND"})

    assert [a["id"] for a in everything["items"]] == [a.id for a in reversed(raised)]
    assert everything["total"] == 3
    assert (page["total"], page["limit"], page["offset"], [a["id"] for a in page["items"]]) == (
        3,
        1,
        1,
        [raised[1].id],
    )
    assert [a["kind"] for a in of_a["items"]] == ["RATE_BANNED", "BALANCE_DRIFT"]
    assert [a["run_id"] for a in banned["items"]] == [RUN_A]
    drift = everything["items"][-1]
    assert drift["severity"] == "critical" and drift["details"]["drift"] == {"BTC": 0.5}
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_each_user_lists_only_the_alerts_of_their_own_runs_and_an_admin_lists_all() -> None:
    async with auth_client() as c:
        alice, bob = await add_user(c, "alice"), await add_user(c, "bob")
        await add_user(c, "root", role="admin")
        sink: AlertService = c.app.state.alerts  # type: ignore[attr-defined]
        mine = raise_alert(sink, RUN_A, alice)
        theirs = raise_alert(sink, RUN_B, bob)
        await sink.drain()

        seen: dict[str, list[str]] = {}
        for name in ("alice", "bob", "root"):
            headers = {"Authorization": f"Bearer {(await login(c, name))['access_token']}"}
            r = await c.get("/api/v1/alerts", headers=headers)
            assert r.status_code == 200, r.text
            seen[name] = [a["id"] for a in r.json()["items"]]
        # Another user's run id as a filter finds nothing either.
        headers = {"Authorization": f"Bearer {(await login(c, 'alice'))['access_token']}"}
        other = (await c.get("/api/v1/alerts", params={"run_id": RUN_B}, headers=headers)).json()
        anonymous = await c.get("/api/v1/alerts")

    assert seen == {"alice": [mine.id], "bob": [theirs.id], "root": [theirs.id, mine.id]}
    assert other["items"] == [] and other["total"] == 0
    assert anonymous.status_code == 401


def test_the_sdk_lists_alerts_and_streams_them_on_the_alerts_channel_and_the_status_stream() -> None:
    with LiveServer() as server:
        sink: AlertService = server.app.state.alerts
        with CrackTraderAPI(server.base_url) as api:
            with api.stream_alerts() as channel, api.stream_status(run_id="*") as status:
                assert next(iter(status)).type == "snapshot"
                alert = raise_alert(sink, RUN_A, None, AlertKind.EXTERNAL_ORDER)  # from this thread: handed over
                message = next(iter(channel))
                event = next(e for e in status if e.type == events.ALERT)
            listed = api.alerts(run_id=RUN_A)

    assert message.channel == "alerts"
    assert (message.data["id"], message.data["kind"], message.data["severity"]) == (alert.id, "EXTERNAL_ORDER",
                                                                                      "warning")  # fmt: skip
    assert event.payload["id"] == alert.id and event.timestamp  # seed 003's {type, payload, timestamp}
    assert [a.id for a in listed.items] == [alert.id] and listed.items[0].kind == "EXTERNAL_ORDER"


async def test_the_async_sdk_lists_alerts_by_kind() -> None:
    async with app_client() as c:
        sink: AlertService = c.app.state.alerts  # type: ignore[attr-defined]
        raise_alert(sink, RUN_A, None, AlertKind.SESSION_HALTED)
        raise_alert(sink, RUN_A, None, AlertKind.RATE_BANNED)
        await sink.drain()
        transport = httpx.ASGITransport(app=c.app)  # type: ignore[attr-defined]
        async with AsyncCrackTraderAPI("http://127.0.0.1:8000", transport=transport) as api:
            page = await api.alerts(kind="SESSION_HALTED")
    assert [a.kind for a in page.items] == ["SESSION_HALTED"] and page.total == 1


# --- the webhook ----------------------------------------------------------------------------------------------


class Receiver:
    """A real HTTP server on 127.0.0.1 answering `statuses` in turn (then 200), recording what it got."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.received: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.queries: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        self.auth.append(request.headers.get("Authorization"))
        self.queries.append(request.query_string)
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok" if status < 300 else "boom")


@asynccontextmanager
async def receiver(statuses: list[int]) -> AsyncIterator[tuple[Receiver, int]]:
    rx = Receiver(statuses)
    app = web.Application()
    app.router.add_post("/hooks/alerts", rx.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield rx, port
    finally:
        await runner.cleanup()


class Sleeper:
    """The webhook's backoff: records each wait and returns at once (or when `release` is set, if gated)."""

    def __init__(self, gated: bool = False) -> None:
        self.waits: list[float] = []
        self.release = asyncio.Event()
        if not gated:
            self.release.set()

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await self.release.wait()


@contextmanager
def all_logs() -> Iterator[list[logging.LogRecord]]:
    """Every record of every logger at DEBUG, httpx's included, after the loggers' own filters."""
    from cracktrader.web.log_redaction import install_log_redaction

    install_log_redaction()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    names = ("", "httpx", "httpcore", "cracktrader")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    try:
        yield records
    finally:
        logging.getLogger().removeHandler(handler)
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


async def test_the_webhook_retries_two_500s_with_exponential_backoff_then_delivers_without_logging_its_secrets() -> (
    None
):
    async with receiver([500, 500]) as (rx, port):
        url = f"http://hookuser:s3cr3t-pass@127.0.0.1:{port}/hooks/alerts?token=s3cr3t-token"
        sleeper = Sleeper()
        poster = WebhookPoster(url, attempts=5, backoff_s=0.5, sleep=sleeper)
        sink = AlertService(None, None, poster)
        with all_logs() as records:
            alert = raise_alert(sink, RUN_A, 3, AlertKind.RATE_BANNED)
            await sink.drain()
            await sink.close()

    assert sleeper.waits == [0.5, 1.0]  # after the first and the second 500
    assert len(rx.received) == 3 and (poster.delivered, poster.failed) == (1, 0)
    body = rx.received[-1]
    assert body["type"] == "alert" and body["payload"]["id"] == alert.id and body["payload"]["kind"] == "RATE_BANNED"
    assert rx.queries[-1] == "token=s3cr3t-token" and rx.auth[-1] is not None  # the receiver gets its credentials
    # Everything this side logged (the receiving server's own access log is the other side's).
    text = "\n".join(r.getMessage() for r in records if not r.name.startswith("aiohttp"))
    assert "Alert webhook http://***@127.0.0.1" in text  # the failures were logged, redacted
    assert "s3cr3t" not in text and "hookuser" not in text
    assert "s3cr3t" not in repr(poster)


async def test_a_webhook_that_keeps_failing_gives_up_after_its_attempts_and_a_refusal_is_not_retried() -> None:
    async with receiver([503] * 10) as (rx, port):
        sleeper = Sleeper()
        failing = WebhookPoster(f"http://127.0.0.1:{port}/hooks/alerts", attempts=3, backoff_s=1.0, sleep=sleeper)
        assert not await failing.post(raise_alert(None, RUN_A, None))
        await failing.close()
    assert sleeper.waits == [1.0, 2.0] and len(rx.received) == 3

    async with receiver([400]) as (rx, port):
        refused = WebhookPoster(f"http://127.0.0.1:{port}/hooks/alerts", attempts=3, sleep=Sleeper())
        assert not await refused.post(raise_alert(None, RUN_A, None))
        await refused.close()
    assert len(rx.received) == 1


async def test_an_alert_is_stored_and_streamed_while_its_webhook_is_still_retrying() -> None:
    async with app_client() as c, receiver([500, 500]) as (rx, port):
        app = c.app  # type: ignore[attr-defined]
        sleeper = Sleeper(gated=True)  # the backoff holds until released
        service: AlertService = app.state.alerts
        service.webhook = WebhookPoster(f"http://127.0.0.1:{port}/hooks/alerts", sleep=sleeper)
        listener = app.state.manager.bus.subscribe(frozenset({events.ALERT}))
        alert = raise_alert(service, RUN_A, None)  # returns at once: nothing here waits for the webhook

        published = await asyncio.wait_for(listener.get(), 10)
        for _ in range(1000):  # the first attempt answered 500: the poster waits in its backoff
            if sleeper.waits:
                break
            await asyncio.sleep(0.01)
        stored = (await c.get("/api/v1/alerts")).json()["items"]
        assert sleeper.waits == [1.0] and len(rx.received) == 1
        sleeper.release.set()
        await service.drain()

    assert published is not None and published.payload["id"] == alert.id
    assert [a["id"] for a in stored] == [alert.id]
    assert len(rx.received) == 3


def test_urls_lose_their_user_info_and_query_and_keep_the_rest() -> None:
    assert (
        redact_url("https://u:p@hooks.example.com:8443/a/b?token=x&k=y") == "https://***@hooks.example.com:8443/a/b?***"
    )
    assert redact_url("https://hooks.example.com/a") == "https://hooks.example.com/a"
    assert redact_url("http://[::1]:9000/x?sig=1") == "http://[::1]:9000/x?***"
    assert json.dumps(redact_url("http://tok@h/")) == '"http://***@h/"'


async def test_the_webhook_comes_from_CRACKTRADER_ALERT_WEBHOOK_and_its_url_shows_nowhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRACKTRADER_ALERT_WEBHOOK", "https://bot:s3cr3t@hooks.example.com/a?key=s3cr3t")
    monkeypatch.setenv("CRACKTRADER_ALERT_WEBHOOK_ATTEMPTS", "3")
    settings = Settings()
    service = AlertService.from_settings(settings, None, None)
    assert service.webhook is not None and service.webhook.attempts == 3
    assert service.webhook.shown_url == "https://***@hooks.example.com/a?***"
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in repr(service.webhook)
    await service.close()
    assert AlertService.from_settings(Settings(alert_webhook=None), None, None).webhook is None
