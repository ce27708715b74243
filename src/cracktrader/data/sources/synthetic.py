"""The offline `synthetic` exchange: deterministic, realistic candles for any BASE/QUOTE symbol.

Prices follow a daily anchor path (a mean-reverting random walk with GARCH(1,1) volatility, one step per
UTC day since 2015-01-01). Inside each day a variance-weighted Brownian bridge joins consecutive anchors,
with a smooth, hash-driven intraday volatility factor. Every random number comes from a stateless hash of
(seed, stream, bar open time), so a bar is identical whatever range is requested.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cracktrader.data.candles import COLUMNS, Candles, ms_to_iso
from cracktrader.data.sources.base import ProgressCallback
from cracktrader.data.timeframes import Timeframe, parse_timeframe
from cracktrader.errors import InvalidDateRangeError, InvalidSymbolError

EPOCH_MS = 1_420_070_400_000  # 2015-01-01T00:00:00Z: no synthetic candle opens earlier.
DAY_MS = 86_400_000
MAX_BARS = 50_000_000  # ~2.4 GB of candles; larger requests are almost certainly mistakes.
_CHUNK_BARS = 1 << 20  # generate in pieces to bound temporary memory

EXAMPLE_SYMBOLS: tuple[str, ...] = (
    "BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT", "DOGE/USDT", "ETH/BTC", "BTC/EUR",
)  # fmt: skip

_SYMBOL_RE = re.compile(r"^([A-Z0-9][A-Z0-9._-]{0,29})/([A-Z0-9][A-Z0-9._-]{0,29})(?::[A-Z0-9][A-Z0-9._-]{0,29})?$")

# Rough USD values and daily volatilities so that familiar assets look familiar; others come from the hash.
_USD_VALUE = {
    "BTC": 30_000.0, "ETH": 2_000.0, "BNB": 300.0, "SOL": 100.0, "XRP": 0.5, "ADA": 0.4, "DOGE": 0.1,
    "LTC": 80.0, "DOT": 6.0, "AVAX": 20.0, "LINK": 10.0, "TRX": 0.1, "BCH": 250.0, "XLM": 0.12,
    "ATOM": 9.0, "UNI": 6.0, "ETC": 20.0, "EUR": 1.08, "GBP": 1.25,
}  # fmt: skip
_STABLE = frozenset({"USDT", "USDC", "BUSD", "DAI", "TUSD", "FDUSD", "USD", "USDP", "PYUSD"})
_DAILY_VOL = {"BTC": 0.03, "ETH": 0.04, "EUR": 0.005, "GBP": 0.005}
_USD_VOLUME_PER_DAY = {"BTC": 1.5e9, "ETH": 8e8}

# Hash streams: each random quantity gets its own so they are independent.
_S_ANCHOR, _S_DAY_HL, _S_DAY_MISC, _S_BAR_Z, _S_BAR_HL, _S_BAR_MISC, _S_OCTAVE = range(7)
# Intraday volatility octaves: (knot spacing, weight of its log-volatility contribution).
_OCTAVES: tuple[tuple[int, float], ...] = ((15 * 60_000, 0.3), (4 * 3_600_000, 0.35))
# GARCH(1,1) on daily returns: persistence alpha + beta close to 1 gives long volatility clusters.
_GARCH_ALPHA, _GARCH_BETA = 0.1, 0.85
_MEAN_REVERSION = 0.004  # per day, towards the base price; keeps a decade-long walk plausible
_GAP_SCALE = 0.03  # close-to-next-open gap, as a fraction of the bar's volatility

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class _Profile:
    """Per-symbol constants."""

    key: int  # symbol seed, shared by all timeframes so daily paths agree across timeframes
    log_base: float
    daily_vol: float
    base_volume_per_day: float
    decimals: int  # prices are rounded to 10**-decimals, about a millionth of the base price


# -- stateless random numbers ------------------------------------------------------------------------


def stable_seed(text: str) -> int:
    """A 64-bit seed that is the same on every machine and Python run (unlike hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _hash(key: int, stream: int, idx: np.ndarray) -> np.ndarray:
    """splitmix64 of (key, stream, idx): 64 well-mixed random bits per element."""
    base = np.uint64((key ^ (stream * 0xD1B54A32D192ED03)) & _MASK64)
    x = idx.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x += base
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _uniform_pair(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two uniforms per hash: the first in (0, 1] (safe for log), the second in [0, 1)."""
    hi = (bits >> np.uint64(32)).astype(np.float64)
    lo = (bits & np.uint64(0xFFFFFFFF)).astype(np.float64)
    return (hi + 1.0) * 2.0**-32, lo * 2.0**-32


def _normal(key: int, stream: int, idx: np.ndarray) -> np.ndarray:
    """Standard normals by Box-Muller on hashed uniforms."""
    u1, u2 = _uniform_pair(_hash(key, stream, idx))
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


# -- symbol profile ----------------------------------------------------------------------------------


def parse_symbol(symbol: str) -> tuple[str, str]:
    """Split `BASE/QUOTE` (optionally `:SETTLE`), raising InvalidSymbolError when malformed."""
    match = _SYMBOL_RE.match(symbol.strip().upper())
    if match is None:
        raise InvalidSymbolError(
            f"Symbol {symbol!r} is not of the form BASE/QUOTE; the synthetic exchange accepts any such "
            f"symbol, e.g. {', '.join(EXAMPLE_SYMBOLS[:4])}",
            details={"symbol": symbol, "exchange": "synthetic", "supported_symbols": list(EXAMPLE_SYMBOLS)},
        )
    return match.group(1), match.group(2)


def _asset_usd(asset: str) -> float:
    if asset in _STABLE:
        return 1.0
    if asset in _USD_VALUE:
        return _USD_VALUE[asset]
    u = (stable_seed("usd:" + asset) >> 11) * 2.0**-53
    return float(10 ** (-2 + 4 * u))  # log-uniform between 0.01 and 100


def _asset_vol(asset: str) -> float:
    if asset in _STABLE:
        return 0.0005
    if asset in _DAILY_VOL:
        return _DAILY_VOL[asset]
    u = (stable_seed("vol:" + asset) >> 11) * 2.0**-53
    return 0.045 + 0.03 * u


@lru_cache(maxsize=256)
def _profile(symbol: str) -> _Profile:
    base, quote = parse_symbol(symbol)
    price = _asset_usd(base) / _asset_usd(quote)
    usd_volume = _USD_VOLUME_PER_DAY.get(base)
    if usd_volume is None:
        u = (stable_seed("volume:" + base) >> 11) * 2.0**-53
        usd_volume = 10 ** (6.7 + 1.6 * u)  # $5M to $200M a day
    return _Profile(
        key=stable_seed(f"{base}/{quote}"),
        log_base=math.log(price),
        daily_vol=max(_asset_vol(base), _asset_vol(quote)),
        base_volume_per_day=usd_volume / _asset_usd(base),
        decimals=6 - math.floor(math.log10(price)),
    )


def asset_usd(asset: str) -> float:
    """The rough US dollar value the generator gives `asset` (its market specs size orders with it)."""
    return _asset_usd(asset.upper())


def price_decimals(symbol: str) -> int:
    """Decimals the generator rounds `symbol`'s prices to: its price step is 10 ** -decimals."""
    return _profile(symbol.strip().upper()).decimals


# -- the daily anchor path ---------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _daily_path(key: int, log_base: float, daily_vol: float, n_days: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-price anchors at each UTC midnight (n_days + 1) and each day's GARCH variance (n_days).

    The recursion always starts at day 0 and the shocks are hashed by day, so a longer path extends a
    shorter one without changing it.
    """
    # Shock d + 1 drives day d; shock 0 sets the 2015 level, so n_days never changes an earlier value.
    z = _normal(key, _S_ANCHOR, np.arange(n_days + 1, dtype=np.int64)).tolist()
    var0 = daily_vol * daily_vol
    omega = var0 * (1.0 - _GARCH_ALPHA - _GARCH_BETA)
    anchors = [0.0] * (n_days + 1)
    variances = [0.0] * n_days
    a = log_base + 0.3 * z[0]
    h = var0
    for d in range(n_days):
        r = math.sqrt(h) * z[d + 1]
        anchors[d] = a
        variances[d] = h
        a += r - _MEAN_REVERSION * (a - log_base)
        h = omega + _GARCH_ALPHA * r * r + _GARCH_BETA * h
    anchors[n_days] = a
    out_a, out_h = np.asarray(anchors), np.asarray(variances)
    out_a.flags.writeable = False
    out_h.flags.writeable = False
    return out_a, out_h


def _anchors(profile: _Profile, last_day: int) -> tuple[np.ndarray, np.ndarray]:
    """Anchors for days 0..last_day (inclusive) and variances for days 0..last_day-1."""
    # Allocate in blocks so the cache is reused as time moves on.
    n_days = (last_day // 512 + 1) * 512
    return _daily_path(profile.key, profile.log_base, profile.daily_vol, n_days)


# -- generation --------------------------------------------------------------------------------------


def _intraday_log_vol(key: int, first_day: int, n_days: int, tf_ms: int) -> np.ndarray:
    """Smooth multi-scale log-volatility factor (mean square ~1) as an (n_days, bars per day) array."""
    n = DAY_MS // tf_ms
    out = np.zeros(n_days * n, dtype=np.float64)
    total_var = 0.0
    for i, (spacing, weight) in enumerate(_OCTAVES):
        if spacing <= tf_ms:
            continue  # coarser bars average this octave away
        # Knot spacings divide a day and are multiples of every finer timeframe, so bars split each
        # knot interval evenly and the interpolation weights repeat with period `per_knot`.
        per_knot = spacing // tf_ms
        k0 = first_day * (DAY_MS // spacing)
        knots = _normal(key, _S_OCTAVE + 16 * i, np.arange(k0, k0 + out.size // per_knot + 1, dtype=np.int64))
        frac = np.arange(per_knot, dtype=np.float64) / per_knot
        out += weight * (knots[:-1, None] * (1.0 - frac) + knots[1:, None] * frac).ravel()
        total_var += weight * weight * 0.67  # variance of a linear blend of two independent normals
    # US trading hours are busier; cos peaks at 15:00 UTC.
    hours = np.arange(n, dtype=np.float64) * (tf_ms / 3_600_000)
    season = 0.2 * np.cos(2.0 * np.pi * (hours - 15.0) / 24.0) - total_var
    return out.reshape(n_days, n) + season


def _activity(sigma_ratio: np.ndarray, z: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Volume multiplier with mean ~1: busier when volatile and on large moves."""
    return sigma_ratio * (0.4 + 0.45 * np.abs(z) + 0.25 * -np.log(u))


def _intraday(profile: _Profile, seed: int, tf: Timeframe, grid: np.ndarray) -> tuple[np.ndarray, ...]:
    """Log open, high, low, close and volume for sub-daily bars via a per-day Brownian bridge."""
    n = DAY_MS // tf.ms
    d0 = int((grid[0] - EPOCH_MS) // DAY_MS)
    d1 = int((grid[-1] - EPOCH_MS) // DAY_MS)
    n_days = d1 - d0 + 1
    anchors, variances = _anchors(profile, d1 + 1)
    t = EPOCH_MS + d0 * DAY_MS + np.arange(n_days * n, dtype=np.int64) * tf.ms
    sig_day = np.sqrt(variances[d0 : d1 + 1])
    m = np.exp(_intraday_log_vol(profile.key, d0, n_days, tf.ms))
    var = (sig_day[:, None] ** 2 / n) * m * m
    z = _normal(seed, _S_BAR_Z, t).reshape(n_days, n)
    walk = np.cumsum(np.sqrt(var) * z, axis=1)
    cum_var = np.cumsum(var, axis=1)
    start, end = anchors[d0 : d1 + 1, None], anchors[d0 + 1 : d1 + 2, None]
    # Variance-weighted bridge: pinned to today's anchor at 0 and tomorrow's at the end of the day.
    close = start + walk - (cum_var / cum_var[:, -1:]) * (walk[:, -1:] - (end - start))
    close[:, -1] = end[:, 0]
    open_ = np.concatenate([start, close[:, :-1]], axis=1)
    lo = int((grid[0] - t[0]) // tf.ms)
    sl = slice(lo, lo + grid.size)
    open_, close, var, z = open_.ravel()[sl], close.ravel()[sl], var.ravel()[sl], z.ravel()[sl]
    m, sig = m.ravel()[sl], np.repeat(sig_day, n)[sl]
    u_hi, u_lo = _uniform_pair(_hash(seed, _S_BAR_HL, grid))
    u_gap, u_vol = _uniform_pair(_hash(seed, _S_BAR_MISC, grid))
    open_ = open_ + _GAP_SCALE * np.sqrt(var) * (2.0 * u_gap - 1.0)
    high, low = _bridge_extremes(open_, close, var, u_hi, u_lo)
    volume = profile.base_volume_per_day * (tf.ms / DAY_MS) * _activity(sig / profile.daily_vol * m, z, u_vol)
    return open_, high, low, close, volume


def _bridge_extremes(
    a: np.ndarray, b: np.ndarray, var: np.ndarray, u_hi: np.ndarray, u_lo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact samples of the max and min of a Brownian bridge from a to b with total variance var."""
    half = (a + b) / 2.0
    spread = (b - a) ** 2 / 4.0
    high = half + np.sqrt(spread - var * np.log(u_hi) / 2.0)
    low = half - np.sqrt(spread - var * np.log(u_lo) / 2.0)
    return high, low


def _multiday(profile: _Profile, seed: int, tf: Timeframe, grid: np.ndarray) -> tuple[np.ndarray, ...]:
    """Log OHLC and volume for bars of a day or longer, aggregated from daily segments of the anchor path."""
    bar_end = np.append(grid[1:], tf.next(int(grid[-1])))
    d_start = (grid - EPOCH_MS) // DAY_MS
    d_end = (bar_end - EPOCH_MS) // DAY_MS
    first, last = int(d_start[0]), int(d_end[-1])
    anchors, variances = _anchors(profile, last)
    days = np.arange(first, last, dtype=np.int64)
    a, b, var = anchors[first:last], anchors[first + 1 : last + 1], variances[first:last]
    # Daily extremes and volume are keyed by the symbol only, so 1d, 1w and 1M bars agree with each other.
    u_hi, u_lo = _uniform_pair(_hash(profile.key, _S_DAY_HL, days))
    day_high, day_low = _bridge_extremes(a, b, var, u_hi, u_lo)
    z_day = np.diff(anchors[first : last + 1]) / np.sqrt(var)
    u_vol = _uniform_pair(_hash(profile.key, _S_DAY_MISC, days))[0]
    day_volume = profile.base_volume_per_day * _activity(np.sqrt(var) / profile.daily_vol, z_day, u_vol)
    idx = d_start - first
    bar_var = np.add.reduceat(var, idx)
    u_gap = _uniform_pair(_hash(seed, _S_BAR_MISC, grid))[0]
    open_ = anchors[d_start] + _GAP_SCALE * np.sqrt(bar_var / (d_end - d_start)) * (2.0 * u_gap - 1.0)
    return (
        open_,
        np.maximum.reduceat(day_high, idx),
        np.minimum.reduceat(day_low, idx),
        anchors[d_end],
        np.add.reduceat(day_volume, idx),
    )


def _to_candles(grid: np.ndarray, logs: tuple[np.ndarray, ...], decimals: int) -> Candles:
    """Exponentiate, round to the tick size and enforce OHLC ordering after rounding."""
    log_open, log_high, log_low, log_close, volume = logs
    tick = 10.0**-decimals
    open_ = np.maximum(np.round(np.exp(log_open), decimals), tick)
    close = np.maximum(np.round(np.exp(log_close), decimals), tick)
    high = np.maximum(np.round(np.exp(log_high), decimals), np.maximum(open_, close))
    low = np.minimum(np.maximum(np.round(np.exp(log_low), decimals), tick), np.minimum(open_, close))
    return Candles(grid, open_, high, low, close, np.maximum(np.round(volume, 6), 1e-6))


def generate(symbol: str, timeframe: str | Timeframe, start_ms: int, end_ms: int, now_ms: int) -> Candles:
    """Candles opening in [start_ms, end_ms), from 2015-01-01 up to the last bar closed by now_ms."""
    tf = parse_timeframe(timeframe)
    profile = _profile(symbol)
    grid = tf.grid(max(start_ms, EPOCH_MS), min(end_ms, tf.floor(now_ms)))
    if grid.size == 0:
        return Candles.empty()
    seed = stable_seed(f"{symbol.strip().upper()}|{tf.name}")
    logs = _intraday(profile, seed, tf, grid) if tf.ms < DAY_MS else _multiday(profile, seed, tf, grid)
    return _to_candles(grid, logs, profile.decimals)


class SyntheticSource:
    """A built-in offline exchange; `now_ms` pins the clock (for tests), otherwise the wall clock is used."""

    exchange_id = "synthetic"

    def __init__(self, now_ms: int | None = None) -> None:
        self._now_ms = now_ms

    def now_ms(self) -> int:
        """The clock that decides which bars are closed."""
        return self._now_ms if self._now_ms is not None else int(time.time() * 1000)

    def symbols(self) -> list[str]:
        """Example symbols; any well-formed BASE/QUOTE symbol works."""
        return list(EXAMPLE_SYMBOLS)

    def validate_symbol(self, symbol: str) -> None:
        """Raise InvalidSymbolError unless `symbol` looks like BASE/QUOTE."""
        parse_symbol(symbol)

    def fetch(
        self,
        symbol: str,
        timeframe: Timeframe | str,
        start_ms: int,
        end_ms: int,
        progress: ProgressCallback | None = None,
    ) -> Candles:
        """Candles with start_ms <= timestamp < end_ms (none before 2015 or after the last closed bar)."""
        tf = parse_timeframe(timeframe)
        self.validate_symbol(symbol)
        now = self.now_ms()
        lo, hi = max(int(start_ms), EPOCH_MS), min(int(end_ms), tf.floor(now))
        total = tf.count(lo, hi) if hi > lo else 0
        if total > MAX_BARS:
            raise InvalidDateRangeError(
                f"{ms_to_iso(lo)} to {ms_to_iso(hi)} is {total:,} {tf} bars, more than the {MAX_BARS:,} "
                "the synthetic exchange generates at once; use a shorter range or a longer timeframe",
                details={"bars": total, "max_bars": MAX_BARS, "timeframe": tf.name},
            )
        if total <= _CHUNK_BARS or tf.is_monthly:
            candles = generate(symbol, tf, lo, hi, now)
            if progress is not None:
                progress(len(candles), total)
            return candles
        return self._fetch_chunked(symbol, tf, lo, hi, now, total, progress)

    def _fetch_chunked(
        self,
        symbol: str,
        tf: Timeframe,
        lo: int,
        hi: int,
        now: int,
        total: int,
        progress: ProgressCallback | None,
    ) -> Candles:
        """Generate a large range piece by piece; bars do not depend on the piece boundaries."""
        parts: list[Candles] = []
        done = 0
        step = _CHUNK_BARS * tf.ms
        for chunk_start in range(tf.ceil(lo), hi, step):
            part = generate(symbol, tf, chunk_start, min(chunk_start + step, hi), now)
            parts.append(part)
            done += len(part)
            if progress is not None:
                progress(done, total)
        return Candles(*(np.concatenate([getattr(p, c) for p in parts]) for c in COLUMNS))

    def fee_rates(self, symbol: str) -> tuple[float, float] | None:
        """The synthetic exchange publishes no fees; the engine uses its default."""
        return None

    def close(self) -> None:
        """Nothing to release."""
