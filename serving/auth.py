"""API keys of the /v1 endpoints.

Keys are stored only as SHA-256 hex digests (`LAMBDAREC_API_KEYS_SHA256`, a JSON list); a request
sends the key itself in the `X-API-Key` header. Every stored digest is compared in constant time
(`hmac.compare_digest`), and all of them are always compared, so timing does not tell which one was
close. With no keys configured, authentication is off, which only the `local` profile allows:
any other profile refuses to start (`MissingApiKeys`).
"""

from __future__ import annotations

import hashlib
import hmac
import re

from feature_store.settings import Settings

API_KEY_HEADER = "X-API-Key"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class MissingApiKeys(RuntimeError):
    """A non-local profile was started without API keys."""


class BadApiKeyDigest(ValueError):
    """A configured digest is not 64 hex characters."""


def hash_api_key(key: str) -> str:
    """The digest to put in LAMBDAREC_API_KEYS_SHA256 for a key (`lambdarec hash-api-key`)."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyGuard:
    def __init__(self, digests: list[str]) -> None:
        normalized = [d.strip().lower() for d in digests]
        bad = [d for d in normalized if not _DIGEST.match(d)]
        if bad:
            raise BadApiKeyDigest(
                f"{len(bad)} entry(ies) of LAMBDAREC_API_KEYS_SHA256 are not SHA-256 hex digests; "
                "store hashes, not keys: `lambdarec hash-api-key KEY` prints one"
            )
        self._digests = [bytes.fromhex(d) for d in normalized]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def accepts(self, presented: str | None) -> bool:
        if not self.enabled:
            return True
        if not presented:
            return False
        digest = hashlib.sha256(presented.encode()).digest()
        matched = False
        for expected in self._digests:
            matched |= hmac.compare_digest(digest, expected)
        return matched


def guard_from_settings(settings: Settings) -> ApiKeyGuard:
    """The guard for these settings; refuses a non-local profile without keys."""
    if settings.profile != "local" and not settings.api_keys_sha256:
        raise MissingApiKeys(
            f"profile {settings.profile!r} requires API keys: set LAMBDAREC_API_KEYS_SHA256 to a JSON list of "
            "SHA-256 hex digests (`lambdarec hash-api-key KEY` prints one)"
        )
    return ApiKeyGuard(settings.api_keys_sha256)
