"""CDP JWT auth: tokens verified with the public key; key material never leaks."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from cryptoj.errors import KeyFileError
from cryptoj.venues.coinbase import auth

pytestmark = pytest.mark.unit

NAME = "organizations/org-1/apiKeys/key-1"
NOW = 1_700_000_000


def _ec_pem(curve: ec.EllipticCurve | None = None) -> str:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def _ed_b64() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed + pub).decode()


def _ed_pem() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def _write(tmp_path: Path, data: object, name: str = "key.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(("secret", "alg"), [(_ec_pem(), "ES256"), (_ed_b64(), "EdDSA"), (_ed_pem(), "EdDSA")])
def test_rest_jwt_verifies_with_public_key(tmp_path: Path, secret: str, alg: str) -> None:
    key = auth.load_cdp_key(_write(tmp_path, {"name": NAME, "privateKey": secret}))
    assert key.algorithm == alg
    token = auth.rest_jwt(key, "get", "api.coinbase.com", "/api/v3/brokerage/orders/historical/batch?limit=5", now=NOW)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == alg
    assert header["kid"] == NAME
    assert header["typ"] == "JWT"
    assert len(header["nonce"]) == 32 and int(header["nonce"], 16) >= 0
    claims = jwt.decode(token, key.public_key(), algorithms=[alg], options={"verify_exp": False, "verify_nbf": False})
    assert claims == {
        "sub": NAME,
        "iss": "cdp",
        "nbf": NOW,
        "exp": NOW + 120,
        "uri": "GET api.coinbase.com/api/v3/brokerage/orders/historical/batch",
    }


def test_ws_jwt_has_no_uri_and_expires_after_120s() -> None:
    key = auth.CdpKey.from_text(NAME, _ec_pem())
    token = auth.ws_jwt(key, now=NOW)
    claims = jwt.decode(token, key.public_key(), algorithms=["ES256"], options={"verify_exp": False, "verify_nbf": False})
    assert "uri" not in claims
    assert claims["exp"] - claims["nbf"] == auth.JWT_LIFETIME_SECONDS == 120
    # PyJWT's own expiry check agrees: a token made at NOW is expired by the real clock (well past 2023)
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(token, key.public_key(), algorithms=["ES256"])


def test_uri_claim_path_without_leading_slash_and_host_port() -> None:
    key = auth.CdpKey.from_text(NAME, _ec_pem())
    token = auth.rest_jwt(key, "POST", "127.0.0.1:8123", "api/v3/brokerage/orders", now=NOW)
    claims = jwt.decode(token, key.public_key(), algorithms=["ES256"], options={"verify_exp": False, "verify_nbf": False})
    assert claims["uri"] == "POST 127.0.0.1:8123/api/v3/brokerage/orders"


def test_nonce_is_fresh_per_token() -> None:
    key = auth.CdpKey.from_text(NAME, _ed_b64())
    nonces = {jwt.get_unverified_header(auth.ws_jwt(key, now=NOW))["nonce"] for _ in range(20)}
    assert len(nonces) == 20


def test_default_clock_is_used_when_now_omitted() -> None:
    key = auth.CdpKey.from_text(NAME, _ec_pem())
    claims = jwt.decode(auth.ws_jwt(key), key.public_key(), algorithms=["ES256"])  # verifies exp/nbf against now
    assert claims["exp"] - claims["nbf"] == 120


def test_key_material_never_in_repr_str_or_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = _ec_pem()
    caplog.set_level(logging.DEBUG)
    key = auth.load_cdp_key(_write(tmp_path, {"name": NAME, "privateKey": secret}))
    body = "".join(secret.splitlines()[1:-1])
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert NAME in text
        assert body[:20] not in text and "PRIVATE" not in text
    token = auth.rest_jwt(key, "GET", "h", "/p", now=NOW)
    # a damaged key: the error names the file, never the key text
    damaged = secret.replace(body[10:40], "A" * 30)
    with pytest.raises(KeyFileError) as info:
        auth.load_cdp_key(_write(tmp_path, {"name": NAME, "privateKey": damaged}, "bad.json"))
    message = str(info.value)
    assert "bad.json" in message
    assert body[:20] not in message and "AAAA" not in message and token not in message
    assert all(body[:20] not in r.getMessage() for r in caplog.records)


def test_escaped_newlines_in_pem_are_accepted() -> None:
    pem = _ec_pem().replace("\n", "\\n")
    assert auth.CdpKey.from_text(NAME, pem).algorithm == "ES256"


def test_group_readable_key_file_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, {"name": NAME, "privateKey": _ec_pem()})
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        auth.load_cdp_key(path)


def test_key_from_environment_api_key() -> None:
    from cryptoj.config import AppConfig, resolve_api_key

    secret = _ed_pem().replace("\n", "\\n")
    api_key = resolve_api_key(AppConfig(), env={"CRYPTOJ_API_KEY_NAME": NAME, "CRYPTOJ_API_PRIVATE_KEY": secret})
    assert api_key is not None
    key = auth.from_api_key(api_key)
    assert key.algorithm == "EdDSA" and key.name == NAME


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[1]", "JSON object"),
        ({"privateKey": "x"}, "'name'"),
        ({"name": NAME}, "'privateKey'"),
        ({"name": NAME, "privateKey": "-----BEGIN EC PRIVATE KEY-----\ngarbage\n-----END EC PRIVATE KEY-----"}, "PEM"),
        ({"name": NAME, "privateKey": "%%%not-base64%%%"}, "neither a PEM"),
        ({"name": NAME, "privateKey": base64.b64encode(b"x" * 40).decode()}, "neither a PEM"),
        ({"name": NAME, "privateKey": _ec_pem(ec.SECP384R1())}, "P-256"),
    ],
)
def test_bad_key_files_say_what_is_wrong(tmp_path: Path, content: object, match: str) -> None:
    with pytest.raises(KeyFileError, match=match):
        auth.load_cdp_key(_write(tmp_path, content))


def test_missing_file_and_mismatched_ed25519_halves(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        auth.load_cdp_key(tmp_path / "absent.json")
    with pytest.raises(KeyFileError, match="neither a PEM block nor base64"):
        auth.parse_private_key("%%%")
    with pytest.raises(KeyFileError, match="not a readable unencrypted PEM"):
        auth.parse_private_key("-----BEGIN EC PRIVATE KEY-----\ngarbage\n-----END EC PRIVATE KEY-----")
    with pytest.raises(KeyFileError, match="32 or 64 bytes"):
        auth.parse_private_key(base64.b64encode(b"x" * 40).decode())
    raw = base64.b64decode(_ed_b64())
    other = base64.b64decode(_ed_b64())
    with pytest.raises(KeyFileError, match="does not match"):
        auth.CdpKey.from_text(NAME, base64.b64encode(raw[:32] + other[32:]).decode())
    seed_only = base64.b64encode(raw[:32]).decode()
    assert auth.CdpKey.from_text(NAME, seed_only).algorithm == "EdDSA"


def test_unsupported_key_type_and_empty_name() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=1024)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    with pytest.raises(KeyFileError, match="unsupported key type"):
        auth.parse_private_key(rsa_pem)
    with pytest.raises(KeyFileError, match="name"):
        auth.CdpKey.from_text("", _ec_pem())


# --- the pre-signed JWT pool ----------------------------------------------------------------------------


class _WallClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


ORDERS = "/api/v3/brokerage/orders"
CANCEL = "/api/v3/brokerage/orders/batch_cancel"


def _pool(clock: _WallClock, size: int = 2) -> tuple[auth.CdpKey, auth.JwtPool]:
    key = auth.CdpKey(NAME, ec.generate_private_key(ec.SECP256R1()))
    return key, auth.JwtPool(key, "api.coinbase.com", [("POST", ORDERS), ("post", CANCEL)], size=size, wall_clock=clock)


def test_jwt_pool_hands_out_each_presigned_token_once() -> None:
    clock = _WallClock()
    key, pool = _pool(clock)
    assert pool.wanted() and pool.take("POST", ORDERS) is None and pool.misses == 1
    while pool.sign_one():
        pass
    assert not pool.wanted() and pool.signed == 4
    clock.now += 5
    tokens = [pool.take("POST", ORDERS), pool.take("POST", ORDERS)]
    assert pool.take("POST", ORDERS) is None  # two per URI, each used once
    nonces = set()
    for token in tokens:
        assert token is not None
        nonces.add(jwt.get_unverified_header(token)["nonce"])
        claims = jwt.decode(token, key.public_key(), algorithms=["ES256"], options={"verify_exp": False, "verify_nbf": False})
        assert claims["uri"] == f"POST api.coinbase.com{ORDERS}" and claims["nbf"] == NOW and claims["exp"] == NOW + 120
    assert len(nonces) == 2
    cancel = pool.take("POST", CANCEL)
    assert cancel is not None and jwt.decode(
        cancel, key.public_key(), algorithms=["ES256"], options={"verify_exp": False, "verify_nbf": False}
    )["uri"] == f"POST api.coinbase.com{CANCEL}"
    assert pool.take("GET", ORDERS) is None  # not a pooled URI: the caller signs
    assert pool.hits == 3


def test_jwt_pool_discards_tokens_older_than_max_age_or_from_the_future() -> None:
    clock = _WallClock()
    _key, pool = _pool(clock, size=1)
    pool.sign_one()
    pool.sign_one()
    clock.now += pool.max_age  # too old: most of its 120 s would be gone
    assert pool.take("POST", ORDERS) is None
    pool.prune()
    assert pool.take("POST", CANCEL) is None and pool.wanted()
    assert pool.sign_one()  # the emptiest URI first: ORDERS
    clock.now -= 10  # the clock stepped back: its nbf would be in the future
    misses = pool.misses
    assert pool.take("POST", ORDERS) is None and pool.misses == misses + 1


def test_jwt_pool_arguments_are_checked() -> None:
    key = auth.CdpKey(NAME, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ValueError, match="size"):
        auth.JwtPool(key, "h", [], size=0)
    with pytest.raises(ValueError, match="max_age"):
        auth.JwtPool(key, "h", [], max_age=120)
