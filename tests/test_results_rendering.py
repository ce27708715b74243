"""Rendering of results pages: piecewise encoding gives the same JSON as the whole document."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cracktrader.engine.records import STATUS_FILLED
from cracktrader.runs.results import (
    EQUITY_DTYPE,
    ISO_CHUNK,
    JSON_CHUNK,
    ORDER_DTYPE,
    EquityThinner,
    ResultsPage,
    iso_times,
    json_pieces,
)

START_MS = 1_672_531_200_000  # 2023-01-01T00:00:00Z


def _page(n_points: int, n_orders: int) -> ResultsPage:
    equity = np.zeros(n_points, EQUITY_DTYPE)
    equity["ts"] = START_MS + np.arange(n_points) * 60_000
    equity["value"] = 10_000.0 + np.arange(n_points) * 0.25
    equity["cash"] = 5_000.0
    equity["ts"][-1] += 7  # one non-whole second: every timestamp of the curve then carries milliseconds
    orders = np.zeros(n_orders, ORDER_DTYPE)
    orders["id"] = np.arange(1, n_orders + 1)
    orders["created"] = START_MS + np.arange(n_orders) * 60_000
    orders["ts"] = orders["created"] + 60_000
    orders["status"] = STATUS_FILLED
    orders["side"] = np.where(np.arange(n_orders) % 2, -1, 1)
    orders["size"] = 0.5
    orders["price"] = 20_000.0 + np.arange(n_orders)
    orders["pnl"] = np.where(np.arange(n_orders) % 3 == 0, np.nan, 1.5)
    head = {"run_id": "r", "symbols": ["BTC/USDT"], "initial_cash": 10_000.0, "status": "completed"}
    return ResultsPage(
        head=head,
        equity=equity,
        orders=orders,
        trades=orders,
        offset=0,
        limit=n_orders,
        equity_total=n_points,
        orders_total=n_orders,
        trades_total=n_orders,
    )


def test_page_json_bytes_equal_its_document_when_lists_span_many_encoding_chunks() -> None:
    page = _page(n_points=3 * ISO_CHUNK + 5, n_orders=4 * JSON_CHUNK + 3)
    decoded = json.loads(page.json_bytes())
    assert decoded == json.loads(json.dumps(page.document()))
    assert len(decoded["equity_curve"]) == 3 * ISO_CHUNK + 5
    assert len(decoded["orders"]) == len(decoded["trades"]) == 4 * JSON_CHUNK + 3
    assert decoded["trades"][0]["pnl"] is None  # NaN becomes null in every chunk
    assert decoded["trades"][-1]["id"] == 4 * JSON_CHUNK + 3


def test_iso_times_use_one_unit_for_the_whole_array_across_pieces() -> None:
    ts = START_MS + np.arange(2 * ISO_CHUNK + 1, dtype=np.int64) * 60_000
    assert iso_times(ts)[0] == "2023-01-01T00:00:00Z"
    ts[-1] += 250
    stamps = iso_times(ts)
    assert stamps[0] == "2023-01-01T00:00:00.000Z"
    assert stamps[ISO_CHUNK] == "2023-01-03T20:16:00.000Z"
    assert stamps[-1].endswith(".250Z")
    assert len(stamps) == 2 * ISO_CHUNK + 1


def test_consuming_encode_writes_the_same_text_and_empties_the_long_lists() -> None:
    rows = [{"i": i, "x": i / 3} for i in range(2 * JSON_CHUNK + 7)]
    document = {"rows": rows, "short": [1, 2], "n": 3}
    expected = "".join(json_pieces({"rows": list(rows), "short": [1, 2], "n": 3}))
    assert "".join(json_pieces(document, consume=True)) == expected
    assert json.loads(expected)["rows"][-1] == {"i": 2 * JSON_CHUNK + 6, "x": (2 * JSON_CHUNK + 6) / 3}
    assert document["rows"] == [None] * (2 * JSON_CHUNK + 7)
    assert document["short"] == [1, 2]


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (the only loop the app uses)."""
    return "asyncio"


@pytest.mark.anyio
async def test_large_pages_are_encoded_in_a_worker_process_to_the_same_bytes() -> None:
    from cracktrader.web.runs.encoder import PageEncoder

    encoder = PageEncoder(processes=1, large_rows=1_000)
    small, large = _page(10, 5), _page(3_000, 700)
    try:
        small_bytes = await encoder.encode(small)
        assert encoder._pool is None  # small pages never start a process
        large_bytes = await encoder.encode(large)
        assert encoder._pool is not None
    finally:
        encoder.close()

    assert small_bytes == small.json_bytes()
    assert large_bytes == _page(3_000, 700).json_bytes()
    assert len(json.loads(large_bytes)["equity_curve"]) == 3_000


def _bucket_extremes(values: np.ndarray, max_points: int) -> np.ndarray:
    """The thinning rule written plainly: first, last, and each bucket's np.argmin and np.argmax."""
    n = values.shape[0]
    if n <= max_points or n <= 2:
        return np.arange(n)
    edges = np.linspace(1, n - 1, max(1, (max_points - 2) // 2) + 1).astype(np.int64)
    keep = [0, n - 1]
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        if hi > lo:
            keep += [lo + int(np.argmin(values[lo:hi])), lo + int(np.argmax(values[lo:hi]))]
    return np.unique(keep)


def test_thinning_fed_in_any_chunks_keeps_the_same_points_as_the_plain_rule() -> None:
    rng = np.random.default_rng(1)
    for trial in range(300):
        n, max_points = int(rng.integers(1, 3_000)), int(rng.integers(2, 400))
        # Rounded values on odd trials: ties inside buckets and across chunk boundaries.
        values = np.round(rng.normal(size=n).cumsum(), 0 if trial % 2 else 6)
        rows = np.zeros(n, EQUITY_DTYPE)
        rows["value"], rows["ts"] = values, np.arange(n)
        thinner = EquityThinner(n, max_points)
        size = int(rng.integers(1, n + 1))
        for start in range(0, n, size):
            thinner.feed(start, rows[start : start + size])
        assert np.array_equal(thinner.result()["ts"], _bucket_extremes(values, max_points)), (n, max_points, size)
