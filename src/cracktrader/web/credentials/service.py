"""`/credentials`: validate the fields against the exchange's needs, store them sealed, show only what is harmless."""

from __future__ import annotations

import asyncio

from cracktrader.db.credential_store import CredentialStore, StoredCredential
from cracktrader.exchanges.credentials import CheckResult, ExchangeCredentials, check_balance, credentials_for
from cracktrader.settings import Settings
from cracktrader.web.credentials.schemas import CredentialCreate, CredentialOut, CredentialSecrets


def shown(row: StoredCredential) -> CredentialOut:
    """The response shape of stored credentials."""
    return CredentialOut(
        name=row.name,
        exchange=row.exchange,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        rotated_at=row.rotated_at,
    )


async def validated(exchange: str, secrets: CredentialSecrets) -> ExchangeCredentials:
    """The fields checked against ccxt's requiredCredentials of `exchange` (422 naming what is missing)."""
    # In a thread: the first exchange built imports ccxt (~0.5 s).
    return await asyncio.to_thread(credentials_for, exchange, secrets.fields())


async def add(store: CredentialStore, owner_id: int, body: CredentialCreate) -> CredentialOut:
    """Store new credentials under `body.name`."""
    creds = await validated(body.exchange, body)
    return shown(await store.add(owner_id, body.name, creds))


async def rotate(store: CredentialStore, owner_id: int, name: str, secrets: CredentialSecrets) -> CredentialOut:
    """Replace the secrets of stored credentials, keeping their name and exchange."""
    current = await store.get(owner_id, name)
    creds = await validated(current.exchange, secrets)
    return shown(await store.rotate(owner_id, name, creds))


async def test(store: CredentialStore, owner_id: int, name: str, settings: Settings, *, sandbox: bool) -> CheckResult:
    """`fetch_balance` through the stored credentials."""
    creds = await store.resolve(owner_id, name)
    return await check_balance(creds, settings, sandbox=sandbox)
