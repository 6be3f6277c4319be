"""A throw-away RSA key for GitHub App tests: the app's private key (PEM) and its public half
to verify the JWTs hooksync signs with it. Made once per test session (2048 bits is slow)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["APP_KEY", "APP_PEM"]

APP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
APP_PEM = APP_KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption(),
).decode()
