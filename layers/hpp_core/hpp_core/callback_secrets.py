"""Per-session callback secrets.

Klarna's callbacks are unsigned, so each session's `status_update` URL carries a random secret. Only its
SHA-256 is stored: the secret has 256 bits of entropy, so a fast hash is safe and keeps the check cheap.
"""

import hashlib
import hmac
import secrets
from urllib.parse import urlencode

SESSION_ID_PARAM = "session_id"
SECRET_PARAM = "secret"
SESSION_ID_PLACEHOLDER = "{{session_id}}"
MAX_SECRET_LENGTH = 256


def new_callback_secret() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_callback_secret(secret: str) -> str:
    # surrogatepass: a query value can hold a lone surrogate; it is hashed (and matches nothing), not a 500.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def hashes_match(stored_hash: str, presented_hash: str) -> bool:
    """Constant-time comparison, so response timing reveals nothing about the stored hash."""
    return hmac.compare_digest(stored_hash.encode("ascii"), presented_hash.encode("ascii"))


def status_update_url(callback_url: str, secret: str) -> str:
    """The `merchant_urls.status_update` Klarna calls: the placeholder stays literal for Klarna to fill."""
    query = urlencode({SECRET_PARAM: secret})
    separator = "&" if "?" in callback_url else "?"
    return f"{callback_url}{separator}{SESSION_ID_PARAM}={SESSION_ID_PLACEHOLDER}&{query}"
