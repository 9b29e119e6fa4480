"""The Dockerfile's rules, checked by parsing it (no image registry is reachable here).

Multi-stage with wheels built in a builder; the base pinned by version and digest; the
runtime stage non-root by a fixed numeric uid, copying only from the builder; an
exec-form ``foodmesh serve`` entry point; no secrets copied; a .dockerignore that keeps
secrets and local state out of the build context.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from foodmesh.core.services import KNOWN

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

_BASE = re.compile(
    r"^python:3\.11\.\d+-slim-(bookworm|trixie)@sha256:[0-9a-f]{64}$"
)  # version AND digest
_SECRETISH = re.compile(
    r"(^|/)(\.env(\..*)?|.*\.pem|.*\.key|.*\.p12|id_rsa.*|secrets?(/.*)?|\.git(/.*)?|"
    r"\.netrc|\.pypirc|kubeconfig|\.kube(/.*)?|\.docker(/.*)?)$",
    re.IGNORECASE,
)
_SECRET_VAR = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|PRIVATE_KEY|CREDENTIAL)", re.I)


@dataclass
class Instruction:
    op: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    body: list[Instruction] = field(default_factory=list)


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        lines.append(buf + line)
        buf = ""
    if buf:
        lines.append(buf)
    return lines


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs (before the first FROM) and the stages, with ${ARG} substituted in FROM."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(text):
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            m = re.match(r"^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", rest, re.I)
            assert m, f"cannot parse FROM {rest!r}"
            base = re.sub(r"\$\{?(\w+)\}?", lambda g: args.get(g.group(1), g.group(0)), m.group(1))
            stages.append(Stage(base=base, name=m.group(2)))
        elif op == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
        elif stages:
            stages[-1].body.append(Instruction(op, rest))
    return args, stages


def _exec_form(args: str) -> list[str] | None:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def _copy_sources(args: str) -> tuple[list[str], str | None]:
    parts = [p for p in args.split() if p]
    frm = next((p.split("=", 1)[1] for p in parts if p.startswith("--from=")), None)
    paths = [p for p in parts if not p.startswith("--")]
    return paths[:-1], frm


def violations(text: str) -> list[str]:
    """Every rule the Dockerfile breaks, as readable sentences (empty when all hold)."""
    out: list[str] = []
    global_args, stages = parse(text)
    if len(stages) < 2:
        return ["not multi-stage: needs a builder stage and a runtime stage"]
    for st in stages:
        if not _BASE.match(st.base):
            out.append(
                f"base {st.base!r} is not python:3.11.<patch>-slim-<debian> pinned by digest"
            )
    builder, final = stages[0], stages[-1]
    if not any(i.op == "RUN" and "pip wheel" in i.args for i in builder.body):
        out.append("the builder stage does not build wheels (pip wheel)")
    users = [i.args for i in final.body if i.op == "USER"]
    if not users:
        out.append("the runtime stage has no USER: it would run as root")
    else:
        uid, _, gid = users[-1].partition(":")
        if not uid.isdigit() or int(uid) == 0 or (gid and (not gid.isdigit() or int(gid) == 0)):
            out.append(f"USER {users[-1]!r} is not a fixed non-root numeric uid[:gid]")
    entry = [i.args for i in final.body if i.op == "ENTRYPOINT"]
    if not entry or _exec_form(entry[-1]) != ["foodmesh", "serve"]:
        out.append('ENTRYPOINT is not the exec form ["foodmesh", "serve"]')
    for i in final.body:
        if i.op == "CMD" and _exec_form(i.args) is None:
            out.append(f"CMD {i.args!r} is shell form (needs a shell at run time)")
        if i.op == "RUN":
            out.append(f"the runtime stage runs {i.args!r}: build in the builder instead")
        if i.op in {"COPY", "ADD"} and _copy_sources(i.args)[1] is None:
            out.append(f"the runtime stage copies {i.args!r} from the context, not the builder")
    for st in stages:
        for i in st.body:
            if i.op == "ADD":
                out.append(f"ADD {i.args!r}: use COPY (ADD fetches URLs and unpacks archives)")
            if i.op in {"COPY", "ADD"}:
                sources, frm = _copy_sources(i.args)
                for src in sources if frm is None else []:
                    if src in {".", "./", "*"}:
                        out.append(f"COPY {i.args!r} copies the whole build context")
                    if _SECRETISH.search(src.rstrip("/")):
                        out.append(f"COPY {i.args!r} copies a secret-looking path")
            if i.op in {"ENV", "ARG"}:
                for name, value in re.findall(r"(\w+)\s*=\s*(\S+)", i.args):
                    if _SECRET_VAR.search(name) and value:
                        out.append(f"{i.op} {name} bakes a secret value into the image")
    for name in global_args:
        if _SECRET_VAR.search(name):
            out.append(f"ARG {name} passes a secret through the build")
    return out


def test_the_dockerfile_follows_every_rule() -> None:
    assert violations(DOCKERFILE.read_text(encoding="utf-8")) == []


def test_every_package_of_the_distribution_is_copied_into_the_build() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    _, stages = parse(DOCKERFILE.read_text(encoding="utf-8"))
    copied = {
        src.strip("./")
        for i in stages[0].body
        if i.op == "COPY"
        for src in _copy_sources(i.args)[0]
    }
    assert wanted <= copied, f"packages not copied into the builder: {sorted(wanted - copied)}"
    assert {"pyproject.toml", "README.md"} <= copied  # pip needs both to build the wheel


def test_the_image_installs_the_tested_versions() -> None:
    """The builder resolves with constraints.txt, the lock the test suite passed with."""
    _, stages = parse(DOCKERFILE.read_text(encoding="utf-8"))
    copied = {src for i in stages[0].body if i.op == "COPY" for src in _copy_sources(i.args)[0]}
    assert "constraints.txt" in copied
    wheels = [i.args for i in stages[0].body if i.op == "RUN" and "pip wheel" in i.args]
    assert wheels and all("-c constraints.txt" in w for w in wheels)


def test_every_dev_entry_point_installs_with_the_lock() -> None:
    """./dev (and so make and CI) install with constraints.txt; it pins every dependency."""
    dev = (ROOT / "dev").read_text(encoding="utf-8")
    installs = [ln for ln in dev.splitlines() if "pip install" in ln and "$PY" in ln]
    assert installs and all("-c constraints.txt" in ln for ln in installs)
    pinned = {
        ln.split("==")[0].lower().replace("_", "-")
        for ln in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if ln and not ln.startswith("#")
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = {re.split(r"[\[<>=! ;]", w, maxsplit=1)[0].lower().replace("_", "-") for w in wanted}
    assert names <= pinned, f"not in constraints.txt: {sorted(names - pinned)}"


def test_the_image_exposes_every_service_port() -> None:
    _, stages = parse(DOCKERFILE.read_text(encoding="utf-8"))
    exposed = {
        int(p.split("/")[0]) for i in stages[-1].body if i.op == "EXPOSE" for p in i.args.split()
    }
    wanted = {s.grpc_port for s in KNOWN} | {s.metrics_port for s in KNOWN} | {8080, 8090}
    assert wanted <= exposed, f"not exposed: {sorted(wanted - exposed)}"


def _ignored(path: str, patterns: list[str]) -> bool:
    result = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        candidates = {pat, pat.removeprefix("**/")}
        parts = path.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        if any(
            fnmatch.fnmatch(p, c) or fnmatch.fnmatch(p.split("/")[-1], c)
            for c in candidates
            for p in prefixes
        ):
            result = not neg
    return result


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_context() -> None:
    patterns = [
        ln.strip()
        for ln in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    for path in (
        ".git/config",
        ".venv/bin/python",
        ".env",
        "config/.env.production",
        "deploy/tls.key",
        "certs/server.pem",
        ".foodmesh/postgres/pg_hba.conf",
        "tests/conftest.py",
        "home/.kube/config",
        "servers/order/__pycache__/store.cpython-311.pyc",
    ):
        assert _ignored(path, patterns), f"{path} would be sent to the docker daemon"
    for path in (
        "pyproject.toml",
        "README.md",
        "servers/order/store.py",
        "servers/order/migrations/0001_orders.sql",
        "foodmesh/v1/order_pb2.py",
    ):
        assert not _ignored(path, patterns), f"{path} is needed by the build but ignored"


_GOOD = DOCKERFILE.read_text(encoding="utf-8") if DOCKERFILE.exists() else ""


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.replace("USER 10001:10001", "USER root"), "non-root"),
        (lambda t: re.sub(r"\nUSER .*\n", "\n", t), "no USER"),
        (
            lambda t: t.replace('ENTRYPOINT ["foodmesh", "serve"]', "ENTRYPOINT foodmesh serve"),
            "ENTRYPOINT",
        ),
        (lambda t: re.sub(r"@sha256:[0-9a-f]{64}", "", t), "pinned by digest"),
        (lambda t: t.replace("3.11.11-slim", "3.11-slim"), "pinned by digest"),
        (lambda t: t + "\nCOPY . /app\n", "copies"),
        (
            lambda t: t.replace("COPY clients ./clients", "COPY clients ./clients\nCOPY .env ./"),
            "secret-looking",
        ),
        (lambda t: t + "\nENV FOODMESH_AUTH_SECRET=hunter2\n", "bakes a secret"),
        (lambda t: t.replace("pip wheel", "pip install"), "wheels"),
    ],
)
def test_the_checker_catches_a_broken_dockerfile(change: object, expected: str) -> None:
    assert callable(change)
    found = violations(change(_GOOD))
    assert any(expected in v for v in found), found
