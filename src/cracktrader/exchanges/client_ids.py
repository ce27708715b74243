"""Client order ids that carry a session's tag, and how ccxt passes them to each exchange.

An id is the session's 8-character tag followed by a base-36 sequence number: letters and digits
only, at most 18 characters, so it is valid for binance (36), bybit (36), okx (32), kucoin (40),
gate (28 after ccxt's `t-`), kraken free-text `cl_ord_id` (18) and coinbase. The tag always starts
with a letter and is fixed-length, so `parse_client_id` splits any id back unambiguously.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from typing import Any, Literal

TAG_LENGTH = 8
MAX_SEQUENCE_DIGITS = 10  # base 36: 3.6e15 orders per session
MAX_CLIENT_ID_LENGTH = TAG_LENGTH + MAX_SEQUENCE_DIGITS  # 18, the strictest limit above (kraken)
_DIGITS = string.digits + string.ascii_lowercase
_LETTERS = string.ascii_lowercase
MAX_SEQUENCE = 36**MAX_SEQUENCE_DIGITS - 1

LookupCall = Literal["fetch_order", "fetch_open_orders"]


class ClientIdError(ValueError):
    """A tag, sequence or client id that does not follow the format."""


@dataclass(frozen=True, slots=True)
class ParsedClientId:
    """A client order id split back into its session tag and sequence number."""

    tag: str
    sequence: int


def session_tag(seed: str) -> str:
    """A deterministic 8-character tag (a letter, then letters and digits) derived from `seed`."""
    value = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    chars = [_LETTERS[value % 26]]
    value //= 26
    for _ in range(TAG_LENGTH - 1):
        chars.append(_DIGITS[value % 36])
        value //= 36
    return "".join(chars)


def _check_tag(tag: str) -> None:
    if len(tag) != TAG_LENGTH or tag[0] not in _LETTERS or any(c not in _DIGITS for c in tag):
        raise ClientIdError(
            f"a session tag is {TAG_LENGTH} lowercase letters or digits starting with a letter; got {tag!r}"
        )


def _base36(n: int) -> str:
    out = ""
    while True:
        n, digit = divmod(n, 36)
        out = _DIGITS[digit] + out
        if n == 0:
            return out


def make_client_id(tag: str, sequence: int) -> str:
    """The client order id of order `sequence` (from 1) of the session tagged `tag`."""
    _check_tag(tag)
    if not 1 <= sequence <= MAX_SEQUENCE:
        raise ClientIdError(f"sequence must be within 1..{MAX_SEQUENCE}; got {sequence}")
    return tag + _base36(sequence)


def parse_client_id(client_id: str) -> ParsedClientId:
    """Split an id made by `make_client_id`; raises ClientIdError for anything else."""
    tag, digits = client_id[:TAG_LENGTH], client_id[TAG_LENGTH:]
    _check_tag(tag)
    if not digits or len(digits) > MAX_SEQUENCE_DIGITS or any(c not in _DIGITS for c in digits) or digits[0] == "0":
        raise ClientIdError(f"{client_id!r} is not a session tag followed by a base-36 sequence")
    return ParsedClientId(tag, int(digits, 36))


def is_own(client_id: str | None, tag: str) -> bool:
    """True when `client_id` was made for the session tagged `tag` (so the session owns the order)."""
    if not client_id:
        return False
    try:
        return parse_client_id(client_id).tag == tag
    except ClientIdError:
        return False


# ---------------------------------------------------------------- how ccxt 4.5.90 passes it, per exchange


@dataclass(frozen=True, slots=True)
class ClientIdParams:
    """How to give ccxt a client id when creating an order, and how to look the order up by it."""

    exchange: str
    create_param: str  # the key to put in create_order's params
    wire_field: str  # the field the exchange receives (what ccxt turns create_param into)
    wire_prefix: str  # what ccxt prepends on the wire (gate: "t-")
    lookup_call: LookupCall  # the ccxt call that finds an order by client id
    lookup_param: str  # the key to put in that call's params

    def create_params(self, client_id: str) -> dict[str, Any]:
        """The params for `create_order(..., params=...)`."""
        return {self.create_param: client_id}

    def lookup_params(self, client_id: str) -> dict[str, Any]:
        """The params for the lookup call (`fetch_order(None, symbol, ...)` or `fetch_open_orders(symbol, ...)`)."""
        return {self.lookup_param: client_id}

    def on_wire(self, client_id: str) -> str:
        """The value the exchange receives."""
        return self.wire_prefix + client_id


# Checked by tests/test_client_ids.py: the real ccxt client builds each request against a loopback server.
CLIENT_ID_PARAMS: dict[str, ClientIdParams] = {
    p.exchange: p
    for p in (
        ClientIdParams("binance", "clientOrderId", "newClientOrderId", "", "fetch_order", "clientOrderId"),
        # fetch_order needs a unified account and `acknowledged`; /v5/order/realtime filters by orderLinkId.
        ClientIdParams("bybit", "clientOrderId", "orderLinkId", "", "fetch_open_orders", "orderLinkId"),
        ClientIdParams("okx", "clientOrderId", "clOrdId", "", "fetch_order", "clientOrderId"),
        ClientIdParams("kucoin", "clientOrderId", "clientOid", "", "fetch_order", "clientOrderId"),
        ClientIdParams("gate", "clientOrderId", "text", "t-", "fetch_order", "clientOrderId"),
        # fetch_order maps clientOrderId to the integer `userref`; open/closed orders take cl_ord_id.
        ClientIdParams("kraken", "clientOrderId", "cl_ord_id", "", "fetch_open_orders", "clientOrderId"),
        # ccxt drops a unified clientOrderId for coinbase: the raw field must be passed; no lookup filter
        # exists, so the open orders are listed and matched on their clientOrderId.
        ClientIdParams("coinbase", "client_order_id", "client_order_id", "", "fetch_open_orders", "client_order_id"),
    )
}


def client_id_params(exchange_id: str) -> ClientIdParams:
    """The client-id parameters for `exchange_id`; raises KeyError naming the supported ones."""
    try:
        return CLIENT_ID_PARAMS[exchange_id]
    except KeyError:
        raise KeyError(
            f"no client-order-id mapping for {exchange_id!r}; known: {', '.join(sorted(CLIENT_ID_PARAMS))}"
        ) from None
