"""API keys for the simulator: create CDP-format key files and verify JWTs.

A key file is the JSON Coinbase's CDP portal hands out::

    {"name": "organizations/{org}/apiKeys/{key}", "privateKey": "-----BEGIN EC PRIVATE KEY-----\\n..."}

EC P-256 keys sign ES256. Ed25519 keys (``"privateKey"`` a PEM ``PRIVATE KEY`` or
CDP's base64 of the 64-byte seed+public key, with the key id in ``"name"`` or
``"id"``) sign EdDSA. The simulator keeps only the *public* keys
(:class:`KeyStore`) and verifies every REST and WebSocket JWT the way Coinbase
does, tolerating the claim variants real clients send (``iss`` "cdp" or
"coinbase-cloud", optional ``aud`` and ``iat``, any host in ``uri``).

Nothing here ever puts a private key or a token into a message, a log or a repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from cryptoj.errors import AuthenticationFailed, KeyFileError

__all__ = [
    "ACCEPTED_ISSUERS",
    "ApiKey",
    "KeyStore",
    "create_key_file",
    "load_key_file",
    "sign_jwt",
]

ACCEPTED_ISSUERS = frozenset({"cdp", "coinbase-cloud"})
_LEEWAY_SECONDS = 5.0
_MAX_LIFETIME_SECONDS = 300.0

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A loaded key. ``private_key`` is excluded from the repr."""

    name: str
    private_key: PrivateKey = field(repr=False)

    @property
    def algorithm(self) -> str:
        return "EdDSA" if isinstance(self.private_key, ed25519.Ed25519PrivateKey) else "ES256"

    def public_key(self) -> PublicKey:
        return self.private_key.public_key()


def _parse_private_key(text: str, where: str) -> PrivateKey:
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(stripped.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError([(where, f"privateKey is not a readable unencrypted PEM key ({type(exc).__name__})")]) from None
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
        raise KeyFileError([(where, "privateKey is neither a PEM block nor base64")]) from None
    if len(raw) not in (32, 64):
        raise KeyFileError([(where, f"base64 Ed25519 key must be 32 or 64 bytes, got {len(raw)}")])
    return ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])


def load_key_file(path: Path) -> ApiKey:
    """Read a CDP key file; :class:`~cryptoj.errors.KeyFileError` names what is wrong (never the key)."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyFileError([(where, f"cannot read key file: {exc.strerror or exc}")]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyFileError([(where, f"not JSON (line {exc.lineno})")]) from None
    if not isinstance(data, dict):
        raise KeyFileError([(where, "expected a JSON object with name and privateKey")])
    name = data.get("name") or data.get("id")
    if not isinstance(name, str) or not name:
        raise KeyFileError([(f"{where}: name", "missing key name (\"name\" or \"id\")")])
    pem = data.get("privateKey")
    if not isinstance(pem, str) or not pem:
        raise KeyFileError([(f"{where}: privateKey", "missing")])
    return ApiKey(name=name, private_key=_parse_private_key(pem, f"{where}: privateKey"))


def create_key_file(path: Path, *, algorithm: str = "ES256", org_id: str | None = None) -> ApiKey:
    """Write a new CDP-format key file (mode 0600) and return the key.

    ``algorithm`` is ``"ES256"`` (EC P-256, PEM ``EC PRIVATE KEY`` — what the CDP
    portal issues for Advanced Trade) or ``"EdDSA"`` (Ed25519, CDP's base64 form).
    An existing file is never overwritten.
    """
    org = org_id or str(uuid.uuid4())
    name = f"organizations/{org}/apiKeys/{uuid.uuid4()}"
    key: PrivateKey
    if algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        secret_text = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode()
    elif algorithm == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        secret_text = base64.b64encode(seed + pub).decode()
    else:
        raise KeyFileError([("algorithm", f"unsupported algorithm {algorithm!r}; use ES256 or EdDSA")])
    payload = json.dumps({"name": name, "privateKey": secret_text}, indent=2) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError([(str(path), "already exists; refusing to overwrite a key file")]) from None
    except OSError as exc:
        raise KeyFileError([(str(path), f"cannot create key file: {exc.strerror or exc}")]) from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(payload)
    os.chmod(path, 0o600)
    return ApiKey(name=name, private_key=key)


def sign_jwt(key: ApiKey, *, now: float, method: str | None = None, path: str | None = None,
             host: str = "api.coinbase.com", lifetime: float = 120.0, extra_claims: Mapping[str, Any] | None = None) -> str:
    """A Coinbase-style JWT (as the official SDK builds it); no ``uri`` when ``method`` is None (WebSocket)."""
    claims: dict[str, Any] = {"sub": key.name, "iss": "cdp", "nbf": int(now), "exp": int(now + lifetime)}
    if method is not None:
        claims["uri"] = f"{method.upper()} {host}{path or ''}"
    if extra_claims:
        claims.update(extra_claims)
    headers = {"kid": key.name, "nonce": secrets.token_hex(16), "typ": "JWT"}
    return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers=headers)


def _uri_path(uri: str) -> tuple[str, str]:
    """Split a ``uri`` claim ``"GET host/path?q"`` into (method, path), ignoring scheme, host and query."""
    method, _, rest = uri.strip().partition(" ")
    rest = rest.strip()
    if "://" in rest:
        rest = urlsplit(rest).path
    elif not rest.startswith("/"):
        slash = rest.find("/")
        rest = rest[slash:] if slash >= 0 else ""
    return method.upper(), rest.split("?", 1)[0]


class KeyStore:
    """The public keys the simulator accepts, by key name."""

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self._public: dict[str, PublicKey] = {}
        for key in keys:
            self.add(key)

    def add(self, key: ApiKey) -> None:
        self._public[key.name] = key.public_key()

    def add_public(self, name: str, public_key: PublicKey) -> None:
        self._public[name] = public_key

    def __contains__(self, name: object) -> bool:
        return name in self._public

    def __len__(self) -> int:
        return len(self._public)

    def __repr__(self) -> str:
        return f"KeyStore(names={sorted(self._public)})"

    def verify(self, token: str | None, *, now: float, method: str | None = None, path: str | None = None) -> str:
        """Check ``token``; return the key name it was signed with.

        With ``method``/``path`` (REST) the ``uri`` claim must name the same method
        and path (the host is ignored). Raises
        :class:`~cryptoj.errors.AuthenticationFailed` with a reason that never
        quotes the token.
        """
        if not token:
            raise AuthenticationFailed("missing JWT", status=401)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationFailed("JWT is not well formed", status=401) from None
        kid = header.get("kid")
        alg = header.get("alg")
        public = self._public.get(kid) if isinstance(kid, str) else None
        if public is None or not isinstance(kid, str):
            raise AuthenticationFailed("unknown API key (kid)", status=401)
        expected_alg = "EdDSA" if isinstance(public, ed25519.Ed25519PublicKey) else "ES256"
        if alg != expected_alg:
            raise AuthenticationFailed(f"JWT alg {alg!r} does not match the key (expected {expected_alg})", status=401)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=public,
                algorithms=[expected_alg],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
            )
        except jwt.InvalidSignatureError:
            raise AuthenticationFailed("JWT signature does not verify", status=401) from None
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed(f"JWT rejected: {type(exc).__name__}", status=401) from None
        self._check_claims(claims, kid, now=now, method=method, path=path)
        return str(kid)

    @staticmethod
    def _check_claims(claims: Mapping[str, Any], kid: str, *, now: float, method: str | None, path: str | None) -> None:
        sub = claims.get("sub")
        if sub is not None and sub != kid:
            raise AuthenticationFailed("JWT sub does not match its kid", status=401)
        iss = claims.get("iss")
        if iss not in ACCEPTED_ISSUERS:
            raise AuthenticationFailed(f"JWT iss {iss!r} not accepted", status=401)
        exp = claims.get("exp")
        nbf = claims.get("nbf")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise AuthenticationFailed("JWT has no numeric exp", status=401)
        if now > exp + _LEEWAY_SECONDS:
            raise AuthenticationFailed("JWT expired", status=401)
        if nbf is not None:
            if not isinstance(nbf, int | float) or isinstance(nbf, bool):
                raise AuthenticationFailed("JWT nbf is not numeric", status=401)
            if now + _LEEWAY_SECONDS < nbf:
                raise AuthenticationFailed("JWT not yet valid (nbf in the future)", status=401)
            if exp - nbf > _MAX_LIFETIME_SECONDS:
                raise AuthenticationFailed("JWT lifetime too long", status=401)
        if method is None:
            return
        uri = claims.get("uri")
        if not isinstance(uri, str) or not uri:
            raise AuthenticationFailed("JWT has no uri claim for a REST request", status=401)
        got_method, got_path = _uri_path(uri)
        if got_method != method.upper() or got_path.rstrip("/") != (path or "").rstrip("/"):
            raise AuthenticationFailed(
                f"JWT uri is for {got_method} {got_path}, request is {method.upper()} {path}", status=401
            )
