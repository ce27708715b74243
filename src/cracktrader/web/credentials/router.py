"""`/credentials`: exchange keys stored encrypted per user under a name; no response ever holds a secret."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status

from cracktrader.db.credential_store import CredentialStore
from cracktrader.web.credentials import service
from cracktrader.web.credentials.schemas import (
    NAME_PATTERN,
    CredentialCreate,
    CredentialList,
    CredentialOut,
    CredentialRotate,
    CredentialTestRequest,
    CredentialTestResult,
)
from cracktrader.web.deps import caller_owner_id

router = APIRouter(prefix="/credentials", tags=["credentials"])

Name = Annotated[str, Path(pattern=NAME_PATTERN, description="The credentials' name")]


def _store(request: Request) -> CredentialStore:
    store: CredentialStore = request.app.state.credential_store
    return store


Store = Annotated[CredentialStore, Depends(_store)]
Owner = Annotated[int, Depends(caller_owner_id)]


@router.post("", response_model=CredentialOut, status_code=status.HTTP_201_CREATED)
async def create_credentials(body: CredentialCreate, store: Store, owner: Owner) -> CredentialOut:
    """Store an exchange's keys encrypted under a name (the fields its ccxt `requiredCredentials` lists)."""
    return await service.add(store, owner, body)


@router.get("", response_model=CredentialList)
async def list_credentials(store: Store, owner: Owner) -> CredentialList:
    """Your stored credentials: name, exchange, created, last used, rotated; never a secret."""
    return CredentialList(credentials=[service.shown(r) for r in await store.list(owner)])


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_credentials(name: Name, store: Store, owner: Owner) -> Response:
    """Delete stored credentials."""
    await store.delete(owner, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/{name}", response_model=CredentialOut)
@router.post("/{name}/rotate", response_model=CredentialOut)
async def rotate_credentials(name: Name, body: CredentialRotate, store: Store, owner: Owner) -> CredentialOut:
    """Replace the secrets of stored credentials; the name and the exchange stay."""
    return await service.rotate(store, owner, name, body)


@router.post("/{name}/test", response_model=CredentialTestResult)
async def test_credentials(
    name: Name, request: Request, store: Store, owner: Owner, body: CredentialTestRequest | None = None
) -> CredentialTestResult:
    """`fetch_balance` through the credentials: `{ok: true}`, or `{ok: false, code}` with the exchange's error code."""
    sandbox = body.sandbox if body is not None else False
    result = await service.test(store, owner, name, request.app.state.settings, sandbox=sandbox)
    return CredentialTestResult(**asdict(result))
