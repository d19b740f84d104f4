"""Personal data at rest and on the way out.

ID and phone numbers are stored encrypted (AES-256-GCM) beside a keyed hash
(HMAC-SHA256 "blind index") that lets the database enforce uniqueness and find
exact matches without holding the plaintext. Callers without the ``pii`` claim
get masked values.
"""

import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nameko.extensions import DependencyProvider

KEY_ENV = "GRASSROOTS_PII_KEY"
NONCE_BYTES = 12


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


class PiiVault:
    def __init__(self, secret: str):
        if not secret or len(secret) < 16:
            raise RuntimeError(f"{KEY_ENV} must be set to a secret of at least 16 characters")
        raw = secret.encode()
        self._aead = AESGCM(_derive(raw, b"grassroots pii encryption"))
        self._index_key = _derive(raw, b"grassroots pii blind index")

    @classmethod
    def from_config(cls, config=None):
        return cls((config or {}).get(KEY_ENV) or os.environ.get(KEY_ENV, ""))

    def encrypt(self, plaintext: str, context: bytes = b"") -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext.encode(), context)

    def decrypt(self, blob: bytes, context: bytes = b"") -> str:
        blob = bytes(blob)
        return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context).decode()

    def blind_index(self, value: str, kind: bytes) -> str:
        return hmac.new(self._index_key, kind + b":" + value.encode(), hashlib.sha256).hexdigest()


def mask_id_number(value: str) -> str:
    """370***********1234: first three and last four characters kept."""
    return value[:3] + "*" * (len(value) - 7) + value[-4:] if len(value) > 7 else "*" * len(value)


def mask_phone(value: str) -> str:
    """138****5678: first three and last four digits kept."""
    return value[:3] + "*" * (len(value) - 7) + value[-4:] if len(value) > 7 else "*" * len(value)


class Vault(DependencyProvider):
    """Injects the service's PiiVault (key from config or GRASSROOTS_PII_KEY)."""

    def setup(self):
        self.vault = PiiVault.from_config(self.container.config)

    def get_dependency(self, worker_ctx):
        return self.vault
