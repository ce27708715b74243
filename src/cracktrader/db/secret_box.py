"""The key that seals stored exchange credentials: from CRACKTRADER_SECRET_KEY, or generated once into a file.

AES-256-GCM with a fresh 12-byte nonce per seal; the associated data binds a ciphertext to its row (owner, name,
exchange), so a row copied over another's does not open. The key check value (an HMAC of a constant) is stored
beside each row: rows sealed by another key are found at start-up without decrypting anything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from cracktrader.errors import CracktraderError
from cracktrader.settings import Settings

KEY_FILE = "secret.key"
MIN_KEY_CHARS = 32
NONCE_BYTES = 12
_INFO = b"cracktrader exchange credentials v1"
_CHECK = b"cracktrader key check v1"


class SecretKeyError(CracktraderError):
    """The credentials key cannot be used: too short, or its file is readable by others."""

    code = "SECRET_KEY_INVALID"
    status_code = 503


class CredentialsUnreadableError(CracktraderError):
    """Stored credentials sealed by another key than the server's (CRACKTRADER_SECRET_KEY changed or was lost)."""

    code = "CREDENTIALS_UNREADABLE"
    status_code = 409


FIX_HINT = (
    "set CRACKTRADER_SECRET_KEY (or restore {file}) to the key they were stored with, or delete them and add them "
    "again (`cracktrader credentials delete NAME`, then `add`)"
)


def fix_hint(settings: Settings) -> str:
    """What to do about credentials the current key cannot open."""
    return FIX_HINT.format(file=settings.data_dir / KEY_FILE)


class SecretBox:
    """Seals and opens credential plaintexts with one key; `key_id` is its check value."""

    def __init__(self, material: bytes) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(material)
        self._aead = AESGCM(key)
        self.key_id = hmac.new(key, _CHECK, hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self.key_id!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The key from CRACKTRADER_SECRET_KEY, else from data_dir/secret.key (created 0600 on first use)."""
        if settings.secret_key is not None and settings.secret_key.get_secret_value():
            value = settings.secret_key.get_secret_value()
            if len(value) < MIN_KEY_CHARS:
                raise SecretKeyError(
                    f"CRACKTRADER_SECRET_KEY must have at least {MIN_KEY_CHARS} characters (it has {len(value)}); "
                    'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
                )
            return cls(value.encode("utf-8"))
        return cls(_key_file(settings.data_dir / KEY_FILE))

    def seal(self, plaintext: bytes, bound_to: bytes) -> bytes:
        """Nonce then ciphertext of `plaintext`, opening only with the same `bound_to`."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, bound_to)

    def open(self, sealed: bytes, bound_to: bytes) -> bytes:
        """The plaintext; CredentialsUnreadableError when another key (or another row) sealed it."""
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], bound_to)
        except (InvalidTag, ValueError) as exc:
            raise CredentialsUnreadableError("Stored credentials do not open with the server's key") from exc


def _key_file(path: Path) -> bytes:
    """The key in `path`, written once (random, owner-only) when there is none; refused if others may read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(base64.urlsafe_b64encode(secrets.token_bytes(32)) + b"\n")
    mode = stat.S_IMODE(path.stat().st_mode)
    if os.name == "posix" and mode & 0o077:
        raise SecretKeyError(
            f"The credentials key file {path} may be read by others (mode {mode:o}): run `chmod 600 {path}`",
            details={"path": str(path)},
        )
    material = path.read_bytes().strip()
    if len(material) < MIN_KEY_CHARS:
        raise SecretKeyError(f"The credentials key file {path} is truncated: restore it from a backup")
    return material
