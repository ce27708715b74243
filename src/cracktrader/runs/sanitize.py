"""What of a run request may be kept: the one function that builds every stored, served and echoed config.

`exchange_config` is reduced to an allowlist (a list of names to hide always misses one): only keys known to be
harmless survive, as scalars of the expected type, at every depth; the rest is dropped and only counted. Elsewhere
values under secret-looking names are masked, and the whole config is capped in size.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "EXCHANGE_CONFIG_ALLOWLIST",
    "MAX_CONFIG_BYTES",
    "REDACTED",
    "SECRET_KEYS",
    "clean_exchange_config",
    "exchange_client_config",
    "looks_secret",
    "redact",
    "redact_query",
    "redact_url",
    "redact_urls",
]

REDACTED = "***"
# A stored or served run config stays this small whatever was sent (100 runs of 900 KB made a 90 MB listing).
MAX_CONFIG_BYTES = 4096
MAX_VALUE_BYTES = 512  # a single strategy parameter (or other field) larger than this is summarized
MAX_STRING_CHARS = 256
MAX_DEPTH = 16
DROPPED_KEY = "exchange_config_dropped_keys"
TRUNCATED_KEY = "config_truncated"
INPUTS_KEY = "inputs"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,99}$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EPOCH_MS = re.compile(r"-?[0-9]{1,20}")  # as runs/config.py's, which imports this module


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_number(v: Any) -> bool:
    # bool is an int in Python; `"rateLimit": true` is not a number.
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_date(v: Any) -> bool:
    """A date as a run accepts one (runs/config.py check_date): ISO 8601 or epoch milliseconds, spaces around."""
    if not isinstance(v, str) or len(v) > 40:
        return False
    text = v.strip()
    if _EPOCH_MS.fullmatch(text):
        return True
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_name(v: Any) -> bool:
    return isinstance(v, str) and bool(_NAME.match(v))


def _is_id(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or (isinstance(v, str) and bool(_ID.match(v)))


def _is_balances(v: Any) -> bool:
    """Currency codes to amounts (a paper session's starting balances): nothing else, at most 50 of them."""
    return (
        isinstance(v, Mapping)
        and len(v) <= 50
        and all(isinstance(k, str) and _is_name(k) and _is_number(x) for k, x in v.items())
    )


Check = Callable[[Any], bool]
# The only `exchange_config` keys ever kept: a check per scalar, or a section with its own allowlist.
# `credentials` references credentials stored on the server; their values never travel in a run config.
Rule = Check | Mapping[str, "Rule"]
EXCHANGE_CONFIG_ALLOWLIST: Mapping[str, Rule] = {
    "sandbox": _is_bool,
    "enableRateLimit": _is_bool,
    "rateLimit": _is_number,
    "paper": {
        "initial_cash": _is_number,
        "fee_rate": _is_number,
        "slippage_bps": _is_number,
        "balances": _is_balances,
        "fill_model": _is_name,
        "latency_ms": _is_number,
        "exchange_rules": _is_bool,
        "replay": {"speed": _is_number, "start": _is_date, "end": _is_date},
    },
    "risk": {
        # brokers/risk.py's RiskLimits
        "capital": _is_number,
        "max_order_notional": _is_number,
        "max_position_notional": _is_number,
        "max_open_orders": _is_number,
        "orders_per_second": _is_number,
        "price_band": _is_number,
        "daily_loss_limit": _is_number,
        "daily_loss_fraction": _is_number,
        # names of v1's first draft, still kept so stored configs read the same
        "max_order_value": _is_number,
        "max_position_value": _is_number,
        "max_daily_loss": _is_number,
        "max_orders_per_minute": _is_number,
    },
    "replay": {"speed": _is_number, "start_date": _is_date, "end_date": _is_date},
    "credentials": {"name": _is_name, "id": _is_id},
}
# Sections that may also be given as one scalar: `"credentials": "NAME"` is `{"name": "NAME"}` said shortly.
SECTION_SHORT_FORMS: Mapping[str, Check] = {"credentials": _is_name}
# Keys of a request's exchange_config that may reach the ccxt constructor (besides the exchange's credentials).
CCXT_ALLOWED_KEYS = ("enableRateLimit", "rateLimit")


def _norm(name: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


# ccxt's requiredCredentials names, and common spellings of keys, secrets and tokens.
_SECRET_NAMES = frozenset(
    {
        "apikey",
        "secret",
        "password",
        "passphrase",
        "privatekey",
        "token",
        "uid",
        "twofa",
        "login",
        "walletaddress",
        "accountid",
        "apisecret",
        "secretkey",
        "accesskey",
        "accesstoken",
        "refreshtoken",
        "clientsecret",
        "clientid",
        "authorization",
        "xmbxapikey",
        "xapikey",
        "apitoken",
        "authtoken",
        "bearer",
        "cookie",
        "credentials",
        "mnemonic",
        "seedphrase",
        "signature",
        "otp",
        "totp",
        "pin",
    }
)
_SECRET_SUFFIXES = ("secret", "password", "passphrase", "apikey", "privatekey", "secretkey", "accesskey", "token")
_HARMLESS_TOKEN_SUFFIXES = ("basetoken", "quotetoken")  # crypto strategy parameters, not credentials


def looks_secret(name: object) -> bool:
    """Whether a key's name says its value is a credential (any case or separator: `API_SECRET`, `api-key`)."""
    n = _norm(name)
    if not n:
        return False
    if n in _SECRET_NAMES:
        return True
    return n.endswith(_SECRET_SUFFIXES) and not n.endswith(_HARMLESS_TOKEN_SUFFIXES)


class _SecretNames(frozenset[str]):
    """Secret key names; `in` matches any spelling (`"API-Secret" in SECRET_KEYS`)."""

    def __contains__(self, item: object) -> bool:
        return looks_secret(item)


SECRET_KEYS: frozenset[str] = _SecretNames(_SECRET_NAMES)


def clean_exchange_config(value: Any) -> tuple[dict[str, Any], int]:
    """The allowlisted part of an exchange_config, and how many keys were dropped (a dropped subtree counts once)."""
    if not isinstance(value, Mapping):
        return {}, 0 if value is None else 1
    return _allowlisted(value, EXCHANGE_CONFIG_ALLOWLIST)


def _allowlisted(value: Mapping[Any, Any], allow: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    kept: dict[str, Any] = {}
    dropped = 0
    for key, item in value.items():
        rule = allow.get(key) if isinstance(key, str) else None
        if isinstance(rule, Mapping):
            if isinstance(item, Mapping):
                kept[key], n = _allowlisted(item, rule)
                dropped += n
            elif key in SECTION_SHORT_FORMS and SECTION_SHORT_FORMS[key](item):
                kept[key] = item
            else:
                dropped += 1
        elif rule is not None and rule(item):
            kept[key] = item
        else:
            dropped += 1
    return kept, dropped


def exchange_client_config(exchange_config: Mapping[str, Any], credential_names: Iterable[str]) -> dict[str, Any]:
    """What of a request's exchange_config may reach a ccxt constructor: allowlisted settings and credentials.

    `credential_names` is the exchange's `requiredCredentials`; URLs, hosts, proxies, headers and options from a
    request are never applied (exchange endpoints come only from the server's configuration). The result holds
    credentials: keep it in memory, never store or log it. Sandbox mode is applied with `set_sandbox_mode`.
    """
    allowed, _ = clean_exchange_config(exchange_config)
    config = {k: allowed[k] for k in CCXT_ALLOWED_KEYS if k in allowed}
    for name in credential_names:
        secret = exchange_config.get(name)
        if isinstance(secret, str) and secret:
            config[name] = secret
    return config


class _Budget:
    """Tracks whether anything was cut while cleaning."""

    __slots__ = ("truncated",)

    def __init__(self) -> None:
        self.truncated = False


def redact(value: Any) -> Any:
    """The config as it may be kept, served or echoed: exchange_config allowlisted, secrets masked, size capped.

    Idempotent: a stored config passed through again is unchanged (the dropped-key count is kept).
    """
    budget = _Budget()
    out = _clean(value, budget, 0)
    if isinstance(out, dict):
        # A run's `inputs` (runs.inputs) is bounded by construction (a few hundred bytes per symbol) and must stay
        # whole to compare runs: it is outside the 4 KB cap, only its oversized parameter values are summarized.
        inputs = out.pop(INPUTS_KEY, None)
        _fit(out, budget)
        if isinstance(inputs, dict):
            params = inputs.get("effective_params")
            if isinstance(params, dict):
                for key, item in params.items():
                    if _size(item) > MAX_VALUE_BYTES:
                        params[key] = _summary(item)
                        budget.truncated = True
            out[INPUTS_KEY] = inputs
        if budget.truncated:
            out[TRUNCATED_KEY] = True
    return out


def _clean(value: Any, budget: _Budget, depth: int) -> Any:
    if depth > MAX_DEPTH and isinstance(value, Mapping | list | tuple):
        budget.truncated = True
        return _summary(value)
    if isinstance(value, Mapping):
        return _clean_mapping(value, budget, depth)
    if isinstance(value, list | tuple):
        return [_clean(v, budget, depth + 1) for v in value]
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        budget.truncated = True
        return _summary(value)
    return value


def _clean_mapping(value: Mapping[Any, Any], budget: _Budget, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = str(key)
        if name == "exchange_config":
            out[name], dropped = clean_exchange_config(item)
            prior = value.get(DROPPED_KEY)
            out[DROPPED_KEY] = dropped + (prior if isinstance(prior, int) and not isinstance(prior, bool) else 0)
        elif name == DROPPED_KEY and "exchange_config" in value:
            continue  # set together with exchange_config
        elif name == TRUNCATED_KEY and depth == 0:
            budget.truncated = budget.truncated or item is True
        elif looks_secret(name):
            out[name] = REDACTED if item not in (None, "") else item
        else:
            out[name] = _clean(item, budget, depth + 1)
    return out


def _size(value: Any) -> int:
    return len(json.dumps(value, default=str))


def _summary(value: Any) -> str:
    if isinstance(value, str):
        return f"{value[:64]}... ({len(value)} chars, truncated)"
    kind = "object" if isinstance(value, Mapping) else type(value).__name__
    return f"<{kind} of {len(value)} items, {_size(value)} bytes, truncated>"


def _item_cost(key: str, item: Any) -> int:
    return _size(key) + _size(item) + 4  # json.dumps separators ": " and ", "


def _fit(out: dict[str, Any], budget: _Budget) -> None:
    """Cap the config at MAX_CONFIG_BYTES: summarize big values, then leave out trailing strategy parameters."""
    if _size(out) <= MAX_CONFIG_BYTES:
        return
    budget.truncated = True
    flag = len(', "config_truncated": true')
    params = out.get("strategy_params")
    if isinstance(params, dict):
        for key, item in params.items():
            if _size(item) > MAX_VALUE_BYTES:
                params[key] = _summary(item)
    for key, item in out.items():
        if key != "strategy_params" and _size(item) > MAX_VALUE_BYTES:
            out[key] = _summary(item)
    if isinstance(params, dict):
        # What is not a parameter, the empty parameters object, the truncation flag and the omitted count.
        rest = {k: v for k, v in out.items() if k != "strategy_params"}
        used = _size(rest) + _item_cost("strategy_params", {}) + flag + _item_cost("strategy_params_omitted", 10**6)
        kept: dict[str, Any] = {}
        for key, item in params.items():
            cost = _item_cost(key, item)
            if used + cost > MAX_CONFIG_BYTES:
                break
            kept[key] = item
            used += cost
        if len(kept) < len(params):
            out["strategy_params_omitted"] = len(params) - len(kept)
        out["strategy_params"] = kept
    # Last resort (an echoed body with thousands of keys): leave out the largest fields until it fits.
    total = _size(out) + flag
    if total > MAX_CONFIG_BYTES:
        total += _item_cost("config_omitted_keys", 10**6)
        omitted = 0
        for cost, key in sorted(((_item_cost(k, v), k) for k, v in out.items()), reverse=True):
            if total <= MAX_CONFIG_BYTES:
                break
            if key in (DROPPED_KEY, "strategy_params_omitted"):
                continue
            del out[key]
            total -= cost
            omitted += 1
        out["config_omitted_keys"] = omitted


# A URL inside free text (an error message, a log line).
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")


def redact_url(url: str) -> str:
    """The URL without credentials: its user info and its query (webhook tokens live in both) become `***`."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return REDACTED  # not a URL we can take apart: show none of it
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    if parts.username is not None or parts.password is not None:
        netloc = f"{REDACTED}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, REDACTED if parts.query else "", ""))


def redact_urls(text: str) -> str:
    """The text with every URL in it passed through `redact_url`."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


# WebSocket clients may send `?token=` (browsers cannot set headers on the handshake); never log its value.
# Any parameter whose name looks secret in any spelling (`api-secret=`, `X_MBX_APIKEY=`) is hidden the same way.
_QUERY_PARAM = re.compile(r"(?<![\w.%-])([\w.%-]{1,64})=([^&\s\"']+)")


def redact_query(text: str) -> str:
    """The text with the values of credential query parameters replaced by `***`."""
    return _QUERY_PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}" if looks_secret(m.group(1)) else m.group(0), text)
