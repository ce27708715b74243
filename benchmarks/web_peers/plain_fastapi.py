"""Peer: plain FastAPI with a response model, no middleware (the issue's ~10,000 req/s reference)."""

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class Status(BaseModel):
    run_id: str | None
    status: str
    mode: str | None


@app.get("/api/v1/status", response_model=Status)
async def status() -> Status:
    return Status(run_id=None, status="idle", mode=None)
