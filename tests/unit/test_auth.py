"""Tokens, roles, the tokens file, and the refusal to serve an open broker beyond loopback."""

from __future__ import annotations

import hashlib

import pytest

from broker import Settings
from broker.auth import ADMIN, CLIENT, WORKER, TokenTable
from broker.cli import main
from broker.errors import AuthError, Forbidden, SettingsError


def test_tokens_file_with_plain_and_hashed_tokens(tmp_path):
    digest = hashlib.sha256(b"gpu-secret").hexdigest()
    path = tmp_path / "tokens"
    path.write_text(f"# role token name\nclient app-secret mobile-app\n\nworker sha256:{digest}\n")
    table = TokenTable.from_settings(Settings(tokens_file=path, admin_tokens=("root",)))
    assert table.authenticate("Bearer app-secret").role == CLIENT
    assert table.authenticate("Bearer gpu-secret").role == WORKER
    assert table.authenticate("bearer root").role == ADMIN
    with pytest.raises(AuthError):
        table.authenticate(f"Bearer sha256:{digest}")  # the digest itself is no token


def test_owner_is_stable_per_token_and_distinct_between_tokens():
    table = TokenTable.from_settings(Settings(client_tokens=("a", "b")))
    assert table.authenticate("Bearer a").owner == table.authenticate("Bearer a").owner
    assert table.authenticate("Bearer a").owner != table.authenticate("Bearer b").owner


def test_bad_tokens_file_is_a_settings_error(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("superuser abc\n")
    with pytest.raises(SettingsError, match="tokens:1"):
        TokenTable.from_settings(Settings(tokens_file=path))
    with pytest.raises(SettingsError, match="cannot read"):
        TokenTable.from_settings(Settings(tokens_file=tmp_path / "missing"))


def test_roles():
    table = TokenTable.from_settings(Settings(client_tokens=("c",), worker_tokens=("w",)))
    table.authenticate("Bearer c").require(CLIENT)
    with pytest.raises(Forbidden):
        table.authenticate("Bearer w").require(CLIENT)
    with pytest.raises(Forbidden):
        table.authenticate("Bearer c").require(ADMIN)


def test_settings_from_env_reject_bad_values():
    with pytest.raises(SettingsError, match="INFERBOX_MAX_WAIT"):
        Settings.from_env({"INFERBOX_MAX_WAIT": "soon"})
    with pytest.raises(SettingsError, match="INFERBOX_ALLOW_OPEN"):
        Settings.from_env({"INFERBOX_ALLOW_OPEN": "maybe"})
    settings = Settings.from_env({"INFERBOX_CLIENT_TOKENS": " a, b ,", "INFERBOX_PORT": "9000"})
    assert settings.client_tokens == ("a", "b") and settings.port == 9000 and settings.embedded


def test_open_broker_refuses_a_public_address(monkeypatch, capsys):
    for name in ("CLIENT", "WORKER", "ADMIN"):
        monkeypatch.delenv(f"INFERBOX_{name}_TOKENS", raising=False)
    monkeypatch.delenv("INFERBOX_TOKENS_FILE", raising=False)
    monkeypatch.delenv("INFERBOX_ALLOW_OPEN", raising=False)
    assert main(["--host", "0.0.0.0"]) == 2
    assert "refusing to serve on 0.0.0.0 without tokens" in capsys.readouterr().err


def test_embedded_redis_needs_one_process(monkeypatch, capsys):
    monkeypatch.delenv("INFERBOX_REDIS_URL", raising=False)
    assert main(["--workers", "3"]) == 2
    assert "embedded Redis lives inside one process" in capsys.readouterr().err
