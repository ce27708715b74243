"""Alerts: `GET /alerts`, the `alerts` stream channel and the webhook."""
