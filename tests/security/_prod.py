"""Helpers of the production-shape tests: a throwaway CA, and the generated k8s files."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from foodmesh.core.tls import TlsFiles

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ROOT / "k8s" / "components"


@dataclass(frozen=True, slots=True)
class Pki:
    """A self-signed CA and one server certificate it signed (for localhost), as PEM files."""

    ca: Path
    cert: Path
    key: Path

    @property
    def server(self) -> TlsFiles:
        return TlsFiles(cert=str(self.cert), key=str(self.key))

    @property
    def client(self) -> TlsFiles:
        return TlsFiles(ca=str(self.ca))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(folder: Path, *, ca_name: str = "foodmesh test CA") -> Pki:
    """Writes ``ca.crt``, ``tls.crt`` and ``tls.key`` (what cert-manager's Secret holds)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name))
        .issuer_name(_name(ca_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    pki = Pki(ca=folder / "ca.crt", cert=folder / "tls.crt", key=folder / "tls.key")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


# ---------------------------------------------------------------- servers with the prod files


def free_port(*, below: int = 65536) -> int:
    """A free TCP port under ``below`` (a cluster node's bus listens 10,000 ports higher)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < below:
            return port


def passwords(users: list[str]) -> dict[str, str]:
    """A random password per user, like the out-of-band Secret's (``openssl rand -hex 32``)."""
    return {u: secrets.token_hex(32) for u in users}


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


async def _wait_port(port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
    for _ in range(200):
        if proc.returncode is not None:
            raise RuntimeError(f"server exited: {_tail(log)}")
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        w.close()
        await w.wait_closed()
        return
    raise RuntimeError(f"server never listened on {port}: {_tail(log)}")


@asynccontextmanager
async def _process(
    argv: list[str], port: int, log: Path, env: dict[str, str]
) -> AsyncIterator[None]:
    with log.open("wb") as out:  # noqa: ASYNC230 - a local file, opened once
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env
        )
    try:
        await _wait_port(port, proc, log)
        yield
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _run(argv: list[str], env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed ({proc.returncode}): {out.decode(errors='replace')}")


@dataclass(frozen=True, slots=True)
class Valkey:
    port: int
    passwords: dict[str, str]

    def url(self, user: str, *, cluster: bool = False, password: str | None = None) -> str:
        scheme = "redis+cluster" if cluster else "redis"
        pw = self.passwords[user] if password is None else password
        return f"{scheme}://{user}:{pw}@127.0.0.1:{self.port}" + ("" if cluster else "/0")


@asynccontextmanager
async def valkey_with_prod_acl(folder: Path) -> AsyncIterator[Valkey]:
    """valkey-server (the project's binary) as a one-node cluster with the generated ACL.

    The ACL file is made the way the pod makes it: k8s/components/redis-acl/acl-init.sh run
    by ``sh`` over the generated users.acl and a folder of one password file per user.
    """
    from foodmesh.infra._servers import _redis_binary

    component = COMPONENTS / "redis-acl"
    template = (component / "users.acl").read_text(encoding="utf-8")
    users = [line.split()[1] for line in template.splitlines() if line.startswith("user ")]
    pws = passwords([u for u in users if u != "default"])
    secret = folder / "acl-users"
    secret.mkdir(parents=True)
    for user, pw in pws.items():
        (secret / user).write_text(pw)
    out = folder / "acl"
    out.mkdir()
    conf = folder / "base.conf"
    port = free_port(below=55536)
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ncluster-enabled yes\n"
        f'cluster-config-file {folder}/nodes.conf\nsave ""\nappendonly no\ndir {folder}\n'
    )
    env = {
        **os.environ,
        "ACL_TEMPLATE": str(component / "users.acl"),
        "ACL_USERS": str(secret),
        "ACL_OUT": str(out),
        "VALKEY_CONF": str(conf),
    }
    await _run(["sh", str(component / "acl-init.sh")], env)
    argv = [str(_redis_binary()), str(out / "valkey.conf")]
    async with _process(argv, port, folder / "valkey.log", dict(os.environ)):
        server = Valkey(port, pws)
        admin = aioredis.Redis.from_url(server.url("admin"))
        try:
            await admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            for _ in range(200):
                info = await admin.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" in text:
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"one-node cluster never became ok: {text}")
        finally:
            await admin.aclose()
        yield server


@dataclass(frozen=True, slots=True)
class Nats:
    port: int
    passwords: dict[str, str]

    def url(self, user: str, *, password: str | None = None) -> str:
        pw = self.passwords[user] if password is None else password
        return f"nats://{user}:{pw}@127.0.0.1:{self.port}"


@asynccontextmanager
async def nats_with_prod_users(folder: Path) -> AsyncIterator[Nats]:
    """nats-server (the project's binary) started from the generated nats-auth files.

    The layout is the pod's: ``nats-auth/main.conf`` includes ``../nats/nats.conf`` (here a
    one-node JetStream config instead of the cluster's) and ``./auth.conf``, and the
    passwords come from ``NATS_PASSWORD_<USER>`` variables.
    """
    from foodmesh.infra._servers import _nats_binary

    component = COMPONENTS / "nats-auth"
    auth = (component / "auth.conf").read_text(encoding="utf-8")
    users = [line.split(":", 1)[1].strip() for line in auth.splitlines() if "user:" in line]
    pws = passwords(users)
    port = free_port()
    (folder / "nats").mkdir(parents=True)
    (folder / "nats" / "nats.conf").write_text(
        f"port: {port}\nhost: 127.0.0.1\njetstream {{\n  store_dir: {folder / 'js'}\n}}\n"
    )
    (folder / "nats-auth").mkdir()
    for name in ("main.conf", "auth.conf"):
        (folder / "nats-auth" / name).write_text((component / name).read_text(encoding="utf-8"))
    env = {**os.environ, **{f"NATS_PASSWORD_{u.upper()}": pw for u, pw in pws.items()}}
    argv = [str(_nats_binary()), "--config", str(folder / "nats-auth" / "main.conf")]
    async with _process(argv, port, folder / "nats.log", env):
        yield Nats(port, pws)
