"""`cracktrader users` and `cracktrader apikeys`: passwords from stdin, keys printed once."""

from __future__ import annotations

from typer.testing import CliRunner

from cracktrader.cli import app

runner = CliRunner()


def test_users_commands_read_the_password_from_stdin() -> None:
    created = runner.invoke(app, ["users", "create", "Ops", "--role", "admin"], input="s3cret-password\n")
    assert created.exit_code == 0, created.output
    assert "created user ops" in created.output and "s3cret" not in created.output
    assert runner.invoke(app, ["users", "create", "ops"], input="s3cret-password\n").exit_code == 2
    assert runner.invoke(app, ["users", "create", "weak"], input="short\n").exit_code == 2
    listed = runner.invoke(app, ["users", "list"])
    assert listed.exit_code == 0 and "ops\tadmin\tactive" in listed.output
    assert runner.invoke(app, ["users", "disable", "ops"]).exit_code == 0
    assert "ops\tadmin\tdisabled" in runner.invoke(app, ["users", "list"]).output
    assert runner.invoke(app, ["users", "disable", "ops", "--enable"]).exit_code == 0
    reset = runner.invoke(app, ["users", "reset-password", "ops"], input="another-password\n")
    assert reset.exit_code == 0 and "password reset for ops" in reset.output
    assert runner.invoke(app, ["users", "disable", "nobody"]).exit_code == 2


def test_apikeys_commands_show_the_key_once() -> None:
    runner.invoke(app, ["users", "create", "bot-owner", "--role", "viewer"], input="s3cret-password\n")
    created = runner.invoke(app, ["apikeys", "create", "--user", "bot-owner", "--name", "grafana"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    prefix, _, secret = key.partition(".")
    assert prefix.startswith("ct_") and len(secret) > 20
    refused = runner.invoke(app, ["apikeys", "create", "-u", "bot-owner", "-n", "x", "--scope", "live"])
    assert refused.exit_code == 2
    listed = runner.invoke(app, ["apikeys", "list", "--user", "bot-owner"])
    assert listed.exit_code == 0 and prefix in listed.output and secret not in listed.output
    assert "read\tactive" in listed.output
    key_id = listed.output.split("\t", 1)[0]
    assert runner.invoke(app, ["apikeys", "revoke", key_id]).exit_code == 0
    assert "revoked" in runner.invoke(app, ["apikeys", "list"]).output
    assert runner.invoke(app, ["apikeys", "revoke", "999"]).exit_code == 2
