"""The live sessions of one server that trade the same exchange account, so each balance check counts them all.

Two sessions may share an account, each with its own capital. The account's balance of an asset is then what no
session holds (the baseline) plus what each of them holds: a buy of one is not drift in the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Account", "Accounts", "Holder", "account_key"]


class Holder(Protocol):
    """A session's holdings of base assets (several symbols may share one base)."""

    def held(self) -> dict[str, float]: ...


def account_key(exchange: str, credentials: Mapping[str, str], where: str = "") -> str:
    """Who the account is: the exchange, where it is reached (sandbox or not) and a hash of the API key."""
    digest = hashlib.sha256(credentials.get("apiKey", "").encode()).hexdigest()[:16]
    return f"{exchange}|{where}|{digest}"


@dataclass(eq=False)
class Account:
    """One exchange account: what no session holds, and the sessions that trade it here."""

    baseline: dict[str, float] = field(default_factory=dict)
    members: list[Holder] = field(default_factory=list)

    def expected(self, asset: str) -> float:
        """What the account should hold of `asset`: the baseline plus every member's holding."""
        return self.baseline.get(asset, 0.0) + sum(m.held().get(asset, 0.0) for m in self.members)


class Accounts:
    """The accounts of this server's live sessions, by `account_key`."""

    def __init__(self) -> None:
        self._by_key: dict[str, Account] = {}

    def join(self, key: str, member: Holder, balances: Mapping[str, float], assets: Iterable[str]) -> Account:
        """Add a session that has just reconciled: the baseline of its assets becomes the balance less all holdings."""
        account = self._by_key.setdefault(key, Account())
        if member not in account.members:
            account.members.append(member)
        for asset in assets:
            account.baseline[asset] = balances.get(asset, 0.0) - sum(m.held().get(asset, 0.0) for m in account.members)
        return account

    def leave(self, key: str, member: Holder) -> None:
        """Remove a session: what it still holds stays on the account as nobody's."""
        account = self._by_key.get(key)
        if account is None or member not in account.members:
            return
        for asset, amount in member.held().items():
            account.baseline[asset] = account.baseline.get(asset, 0.0) + amount
        account.members.remove(member)
        if not account.members:
            del self._by_key[key]
