"""TLS between foodmesh processes: gRPC credentials from mounted PEM files.

Every process reads the same three variables (paths to PEM files, in k8s a mounted
cert-manager Secret):

- ``FOODMESH_TLS_CERT`` / ``FOODMESH_TLS_KEY``: the certificate chain and key a
  service serves its gRPC port with;
- ``FOODMESH_TLS_CA``: the CA bundle a caller (typed clients, gateway, dashboard)
  verifies servers against.

Without them gRPC is plaintext, which only dev mode (``FOODMESH_DEV=1``) allows:
a process started for production without a certificate refuses to start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["TlsConfigError", "TlsFiles", "dev_mode", "require_tls_outside_dev"]

_TRUE = {"1", "true", "yes", "on"}


class TlsConfigError(ValueError):
    """The TLS settings are incomplete, unreadable, or missing outside dev mode."""


def dev_mode(env: Mapping[str, str] | None = None) -> bool:
    """True when ``FOODMESH_DEV`` turns dev mode on (plaintext gRPC allowed)."""
    env = os.environ if env is None else env
    return env.get("FOODMESH_DEV", "").strip().lower() in _TRUE


def _read(var: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{var}={path!r} cannot be read ({exc.strerror})") from None


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where this process's certificate, key and trusted CA bundle are (PEM paths)."""

    cert: str = ""
    key: str = ""
    ca: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TlsFiles:
        """Reads ``FOODMESH_TLS_CERT``, ``FOODMESH_TLS_KEY`` and ``FOODMESH_TLS_CA``."""
        env = os.environ if env is None else env
        files = cls(
            cert=env.get("FOODMESH_TLS_CERT", "").strip(),
            key=env.get("FOODMESH_TLS_KEY", "").strip(),
            ca=env.get("FOODMESH_TLS_CA", "").strip(),
        )
        if bool(files.cert) != bool(files.key):
            raise TlsConfigError(
                "FOODMESH_TLS_CERT and FOODMESH_TLS_KEY go together: set both or neither"
            )
        return files

    @property
    def serves_tls(self) -> bool:
        return bool(self.cert)

    @property
    def dials_tls(self) -> bool:
        return bool(self.ca)

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """The credentials to serve with, or None (plaintext) without a certificate."""
        if not self.serves_tls:
            return None
        key = _read("FOODMESH_TLS_KEY", self.key)
        chain = _read("FOODMESH_TLS_CERT", self.cert)
        return grpc.ssl_server_credentials([(key, chain)])

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """The credentials to dial with, or None (plaintext) without a CA bundle."""
        if not self.dials_tls:
            return None
        return grpc.ssl_channel_credentials(root_certificates=_read("FOODMESH_TLS_CA", self.ca))


def require_tls_outside_dev(
    files: TlsFiles,
    *,
    who: str,
    serves: bool,
    dials: bool,
    env: Mapping[str, str] | None = None,
) -> None:
    """Raises :class:`TlsConfigError` if ``who`` would speak plaintext gRPC outside dev mode."""
    if dev_mode(env):
        return
    missing = []
    if serves and not files.serves_tls:
        missing.append("FOODMESH_TLS_CERT and FOODMESH_TLS_KEY (to serve gRPC over TLS)")
    if dials and not files.dials_tls:
        missing.append("FOODMESH_TLS_CA (to verify the services it calls)")
    if missing:
        raise TlsConfigError(
            f"{who}: plaintext gRPC is for dev only: set {' and '.join(missing)}, "
            "or FOODMESH_DEV=1 for a dev machine"
        )
