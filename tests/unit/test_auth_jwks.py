"""Production tokens: RS256/ES256 checked against a JWKS, cached, refreshed on a new kid."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from foodmesh.core.auth import (
    DEV_SECRET,
    InvalidToken,
    JwksCache,
    TokenVerifier,
    UnknownSigningKey,
    mint_token,
)

ISS, AUD = "https://id.foodmesh.example/", "foodmesh-api"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(key: Any, kid: str) -> dict[str, Any]:
    cls = (
        jwt.algorithms.RSAAlgorithm
        if isinstance(key, rsa.RSAPrivateKey)
        else jwt.algorithms.ECAlgorithm
    )
    doc: dict[str, Any] = json.loads(cls.to_jwk(key.public_key()))
    return {**doc, "kid": kid, "use": "sig"}


def sign(key: Any, kid: str, *, alg: str = "RS256", ttl: int = 300, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "cus_1", "role": "customer", "iss": ISS, "aud": AUD, "iat": now,
            "exp": now + ttl, **claims}  # fmt: skip
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


class Provider:
    """A JWKS document the test can rotate; counts fetches."""

    def __init__(self, *keys: dict[str, Any]) -> None:
        self.keys = list(keys)
        self.fetches = 0

    def __call__(self, url: str, timeout_s: float) -> bytes:
        self.fetches += 1
        return json.dumps({"keys": self.keys}).encode()


def verifier(provider: Provider, **kw: Any) -> TokenVerifier:
    cache = JwksCache("https://id.example/jwks", fetch=provider, min_refresh_s=kw.pop("min", 0))
    return TokenVerifier(kw.pop("secret", None), jwks=cache, issuer=ISS, audience=AUD, **kw)


def test_rs256_and_es256_tokens_verify_against_the_jwks_which_is_cached() -> None:
    provider = Provider(jwk(RSA_KEY, "r1"), jwk(EC_KEY, "e1"))
    v = verifier(provider)
    assert v.verify(sign(RSA_KEY, "r1")).subject == "cus_1"
    p = v.verify(sign(EC_KEY, "e1", alg="ES256", sub="drv_9", role="driver"))
    assert (p.subject, p.role) == ("drv_9", "driver")
    for _ in range(5):
        v.verify(sign(RSA_KEY, "r1"))
    assert provider.fetches == 1


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: sign(RSA_KEY, "r1", ttl=-120), "expired"),
        (lambda: sign(rsa.generate_private_key(public_exponent=65537, key_size=2048), "r1"),
         "bad signature"),
        (lambda: sign(RSA_KEY, "r1", aud="someone-else"), "audience"),
        (lambda: sign(RSA_KEY, "r1", iss="https://evil.example/"), "issuer"),
        (lambda: sign(RSA_KEY, "r1", role="admin"), "unknown role"),
        (lambda: sign(EC_KEY, "r1", alg="ES256"), "not ES256"),  # kid of an RSA key
        (lambda: sign(RSA_KEY, "nope"), "unknown signing key"),
        (lambda: jwt.encode({"sub": "x"}, "k" * 64, algorithm="HS384"), "alg 'HS384'"),
        (lambda: mint_token(DEV_SECRET, subject="cus_1", role="customer"), "HS256 is not accepted"),
    ],
)  # fmt: skip
def test_bad_production_tokens_are_refused_saying_why(make: Any, why: str) -> None:
    v = verifier(Provider(jwk(RSA_KEY, "r1")))
    with pytest.raises(InvalidToken, match=why):
        v.verify(make())


def test_a_new_kid_refetches_the_jwks_at_most_once_per_interval() -> None:
    provider = Provider(jwk(RSA_KEY, "r1"))
    v = verifier(provider, min=3600)
    v.verify(sign(RSA_KEY, "r1"))
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    provider.keys.append(jwk(rotated, "r2"))
    with pytest.raises(UnknownSigningKey):  # fetched < 1 h ago: no hammering the provider
        v.verify(sign(rotated, "r2"))
    assert provider.fetches == 1
    provider.keys = [jwk(RSA_KEY, "r1")]
    v = verifier(provider, min=0)
    v.verify(sign(RSA_KEY, "r1"))
    assert provider.fetches == 2
    provider.keys = [jwk(rotated, "r2")]  # the provider rotated: r2 is fetched on first sight
    assert v.verify(sign(rotated, "r2", sub="cus_7")).subject == "cus_7"
    assert provider.fetches == 3


async def test_the_async_check_fetches_in_a_thread() -> None:
    provider = Provider(jwk(RSA_KEY, "r1"))
    v = verifier(provider)
    assert (await v.verify_async(sign(RSA_KEY, "r1"))).role == "customer"
    assert provider.fetches == 1


def test_service_tokens_work_beside_jwks_but_hs256_user_tokens_do_not() -> None:
    # Changed with issue 17: in JWKS mode user tokens come only from the provider, and the
    # services' own calls carry service tokens under the service key.
    env = {"FOODMESH_AUTH_JWKS_URL": "https://id.example/jwks", "FOODMESH_AUTH_SECRET": "s"}
    v = TokenVerifier.from_env(env, services=True)
    assert v.verify(mint_token("s", subject="order", role="service")).role == "service"
    with pytest.raises(InvalidToken, match="HS256 is not accepted"):
        v.verify(mint_token("s", subject="cus_1", role="customer"))
    assert TokenVerifier.from_env(env).secret is None
    with pytest.raises(InvalidToken, match="service tokens are not accepted"):
        TokenVerifier.from_env(env).verify(mint_token("s", subject="order", role="service"))
    assert TokenVerifier.from_env({}).mode == "hs256"


def test_a_provider_that_is_down_keeps_the_keys_held() -> None:
    provider = Provider(jwk(RSA_KEY, "r1"))
    cache = JwksCache("https://id.example/jwks", fetch=provider, min_refresh_s=0)
    assert cache.refresh() and cache.key("r1") is not None

    def down(url: str, timeout_s: float) -> bytes:
        raise OSError("connection refused")

    cache._fetch = down
    assert not cache.refresh()
    assert cache.key("r1") is not None
