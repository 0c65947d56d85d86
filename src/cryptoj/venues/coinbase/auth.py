"""CDP API key authentication: a fresh signed JWT per REST call and per subscribe.

A CDP key is a ``name`` (``organizations/{org}/apiKeys/{key}``) and a private key:
EC P-256 in PEM (signs ES256, what the CDP portal issues for Advanced Trade) or
Ed25519 (PEM, or CDP's base64 of the 32-byte seed + 32-byte public key; signs
EdDSA). Tokens live 120 s and carry a random nonce, so one is built for every
request.

Signing costs about 0.1 ms (ES256 or EdDSA through PyJWT), so :class:`JwtPool` keeps a
few tokens pre-signed for the hot URIs (order create, batch cancel): each is used for one
request only (its own nonce) and discarded once older than ``max_age`` seconds, so a
token taken from the pool has most of its 120 s lifetime left.

Secrets never leave this module by accident: :class:`CdpKey` keeps the key
out of its ``repr``/``str``, errors name the file and the problem but never the
key text, and nothing here logs.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from cryptoj.config import ApiKey, load_api_key
from cryptoj.errors import KeyFileError

__all__ = [
    "JWT_LIFETIME_SECONDS",
    "CdpKey",
    "JwtPool",
    "from_api_key",
    "load_cdp_key",
    "parse_private_key",
    "rest_jwt",
    "ws_jwt",
]

JWT_LIFETIME_SECONDS: Final = 120
DEFAULT_REST_HOST: Final = "api.coinbase.com"

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def parse_private_key(text: str, where: str = "privateKey") -> PrivateKey:
    """Load an EC P-256 or Ed25519 private key from PEM or CDP's base64 Ed25519 form.

    Raises :class:`~cryptoj.errors.KeyFileError` saying what is wrong — never quoting the key.
    """
    stripped = text.strip().replace("\\n", "\n")
    if stripped.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(stripped.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError([(where, f"not a readable unencrypted PEM private key ({type(exc).__name__})")]) from None
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise KeyFileError([(where, f"EC key must be P-256 (secp256r1), got {key.curve.name}")])
            return key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key
        raise KeyFileError([(where, f"unsupported key type {type(key).__name__}; expected EC P-256 or Ed25519")])
    try:
        raw = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError([(where, "neither a PEM block nor base64")]) from None
    if len(raw) not in (32, 64):
        raise KeyFileError([(where, f"a base64 Ed25519 key must be 32 or 64 bytes, got {len(raw)}")])
    key25519 = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64:
        public = key25519.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if public != raw[32:]:
            raise KeyFileError([(where, "the 64-byte Ed25519 key's public half does not match its seed")])
    return key25519


@dataclass(frozen=True, slots=True)
class CdpKey:
    """A CDP API key. The private key never appears in ``repr``/``str``."""

    name: str
    private_key: PrivateKey = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise KeyFileError([("name", "the key name is empty")])

    @classmethod
    def from_text(cls, name: str, private_key: str) -> CdpKey:
        """Build from the key name and the private key text (PEM or base64 Ed25519)."""
        return cls(name, parse_private_key(private_key))

    @property
    def algorithm(self) -> str:
        """``ES256`` for EC P-256, ``EdDSA`` for Ed25519."""
        return "EdDSA" if isinstance(self.private_key, ed25519.Ed25519PrivateKey) else "ES256"

    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def __str__(self) -> str:
        return f"CdpKey({self.name}, {self.algorithm})"


def load_cdp_key(path: str | Path) -> CdpKey:
    """Read a CDP key file ``{"name": ..., "privateKey": ...}`` into a signing key.

    File handling (existence, permissions — group/other-readable files are refused —,
    JSON shape) is :func:`cryptoj.config.load_api_key`'s; this adds the key-type
    check (EC P-256 or Ed25519). :class:`~cryptoj.errors.KeyFileError` names the
    file and the problem, never the key.
    """
    api_key = load_api_key(Path(path))
    return from_api_key(api_key)


def from_api_key(api_key: ApiKey) -> CdpKey:
    """A signing key from a loaded :class:`cryptoj.config.ApiKey` (file or environment)."""
    return CdpKey(api_key.name, parse_private_key(api_key.private_key.get_secret_value(), f"{api_key.source}: privateKey"))


def _sign(key: CdpKey, claims: dict[str, Any]) -> str:
    headers = {"kid": key.name, "nonce": secrets.token_hex(16), "typ": "JWT"}
    return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers=headers)


def _claims(key: CdpKey, now: float | None) -> dict[str, Any]:
    issued = int(time.time() if now is None else now)
    return {"sub": key.name, "iss": "cdp", "nbf": issued, "exp": issued + JWT_LIFETIME_SECONDS}


def rest_jwt(key: CdpKey, method: str, host: str, path: str, now: float | None = None) -> str:
    """A JWT for one REST call: ``uri`` is ``"METHOD host/path"`` (no scheme, no query).

    ``now`` is Unix seconds (the caller's clock); it defaults to the system clock.
    """
    claims = _claims(key, now)
    request_path = path.split("?", 1)[0]
    if not request_path.startswith("/"):
        request_path = "/" + request_path
    claims["uri"] = f"{method.upper()} {host}{request_path}"
    return _sign(key, claims)


def ws_jwt(key: CdpKey, now: float | None = None) -> str:
    """A JWT for a WebSocket subscribe message (no ``uri`` claim)."""
    return _sign(key, _claims(key, now))


class JwtPool:
    """Pre-signed REST JWTs for a few hot ``(method, path)`` pairs; each token is handed out once.

    :meth:`take` returns a token signed at most ``max_age`` seconds ago (by ``wall_clock``)
    for that URI, or None (the caller signs one itself). :meth:`sign_one` tops up the
    pool by one token; the owner calls it in small steps when the event loop is idle
    (:meth:`wanted` says whether anything is missing).
    """

    def __init__(
        self,
        key: CdpKey,
        host: str,
        uris: Iterable[tuple[str, str]],
        *,
        size: int = 4,
        max_age: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if size < 1:
            raise ValueError(f"JwtPool size must be at least 1, got {size}")
        if not 0 < max_age < JWT_LIFETIME_SECONDS:
            raise ValueError(f"JwtPool max_age must be in (0, {JWT_LIFETIME_SECONDS}) seconds, got {max_age}")
        self.key = key
        self.host = host
        self.size = size
        self.max_age = max_age
        self._wall_clock = wall_clock
        self._tokens: dict[tuple[str, str], deque[tuple[float, str]]] = {(m.upper(), p): deque() for m, p in uris}
        self.hits = 0
        self.misses = 0
        self.signed = 0

    def _fresh(self, issued: float, now: float) -> bool:
        return int(issued) <= now and now - issued < self.max_age

    def take(self, method: str, path: str) -> str | None:
        """A fresh, never used token for ``method path``, or None (not a pooled URI, or none fresh left)."""
        tokens = self._tokens.get((method, path))
        if tokens is None:
            return None
        now = self._wall_clock()
        while tokens:
            issued, token = tokens.popleft()
            if self._fresh(issued, now):
                self.hits += 1
                return token
        self.misses += 1
        return None

    def prune(self) -> None:
        """Drop tokens that are too old to be handed out."""
        now = self._wall_clock()
        for tokens in self._tokens.values():
            while tokens and not self._fresh(tokens[0][0], now):
                tokens.popleft()

    def wanted(self) -> bool:
        """Whether some URI has fewer than ``size`` tokens."""
        return any(len(tokens) < self.size for tokens in self._tokens.values())

    def sign_one(self) -> bool:
        """Sign one token for the emptiest URI; False when the pool is full."""
        if not self._tokens:
            return False
        (method, path), tokens = min(self._tokens.items(), key=lambda item: len(item[1]))
        if len(tokens) >= self.size:
            return False
        now = self._wall_clock()
        tokens.append((now, rest_jwt(self.key, method, self.host, path, now=now)))
        self.signed += 1
        return True
