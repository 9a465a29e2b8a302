"""API keys of the /v1 endpoints and what each may do.

Keys are stored only as SHA-256 hex digests (`LAMBDAREC_API_KEYS_SHA256`, a JSON list); a request
sends the key itself in the `X-API-Key` header. An entry is `<digest>` (every scope) or
`<digest>:<scope>[,<scope>]` with the scopes `read` (recommendations, similar items) and `write`
(publish events), so a key handed to a page renderer cannot inject events. Every stored digest is compared in constant time
(`hmac.compare_digest`), and all of them are always compared, so timing does not tell which one was
close. With no keys configured, authentication is off, which only the `local` profile allows:
any other profile refuses to start (`MissingApiKeys`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from feature_store.settings import Settings

API_KEY_HEADER = "X-API-Key"
READ = "read"  # GET /v1/recommendations, GET /v1/items/{id}/similar
WRITE = "write"  # POST /v1/events
SCOPES = (READ, WRITE)
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class MissingApiKeys(RuntimeError):
    """A non-local profile was started without API keys."""


class BadApiKeyDigest(ValueError):
    """A configured digest is not 64 hex characters."""


def hash_api_key(key: str, scopes: tuple[str, ...] = ()) -> str:
    """The entry to put in LAMBDAREC_API_KEYS_SHA256 for a key (`lambdarec hash-api-key`): its digest,
    followed by `:scopes` when the key may do less than everything."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{digest}:{','.join(scopes)}" if scopes else digest


@dataclass(frozen=True)
class ApiKey:
    """A recognised key: `id` (the first 12 hex characters of its digest, safe to log and to count
    by) and what it may do."""

    id: str
    scopes: frozenset[str]


ANONYMOUS = ApiKey("anonymous", frozenset(SCOPES))  # authentication off (local profile)


def parse_entry(entry: str) -> tuple[bytes, frozenset[str]]:
    """(digest, scopes) of one LAMBDAREC_API_KEYS_SHA256 entry; raises BadApiKeyDigest."""
    digest, _, scopes_text = entry.strip().lower().partition(":")
    if not _DIGEST.match(digest):
        raise BadApiKeyDigest(
            "an entry of LAMBDAREC_API_KEYS_SHA256 is not a SHA-256 hex digest; store hashes, not keys: "
            "`lambdarec hash-api-key KEY` prints one"
        )
    scopes = (
        frozenset(s.strip() for s in scopes_text.split(",") if s.strip())
        if scopes_text
        else frozenset(SCOPES)
    )
    unknown = scopes - set(SCOPES)
    if unknown or not scopes:
        raise BadApiKeyDigest(f"unknown API key scope(s) {sorted(unknown)}; scopes are {', '.join(SCOPES)}")
    return bytes.fromhex(digest), scopes


class ApiKeyGuard:
    def __init__(self, entries: list[str]) -> None:
        self._keys = [parse_entry(e) for e in entries]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def identify(self, presented: str | None) -> ApiKey | None:
        """The key presented, or None when it is missing or unknown (ANONYMOUS with no keys configured)."""
        if not self.enabled:
            return ANONYMOUS
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for expected, scopes in self._keys:  # every digest compared, so timing does not tell which was close
            if hmac.compare_digest(digest, expected):
                found = ApiKey(expected.hex()[:12], scopes)
        return found

    def accepts(self, presented: str | None) -> bool:
        return self.identify(presented) is not None


def guard_from_settings(settings: Settings) -> ApiKeyGuard:
    """The guard for these settings; refuses a non-local profile without keys."""
    if settings.profile != "local" and not settings.auth.keys_sha256:
        raise MissingApiKeys(
            f"profile {settings.profile!r} requires API keys: set LAMBDAREC_API_KEYS_SHA256 to a JSON list of "
            "SHA-256 hex digests (`lambdarec hash-api-key KEY [--scope read|write]` prints one)"
        )
    return ApiKeyGuard(settings.auth.keys_sha256)
