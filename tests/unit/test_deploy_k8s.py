"""The Kubernetes manifests: every overlay renders, validates strictly, and keeps our policies.

Rendering uses ``kubectl kustomize``; validation uses ``kubernetes-validate`` (strict:
unknown fields fail) against a pinned Kubernetes version. CRDs without a schema in that
package are skipped by name below and checked structurally instead. The policy checks
read the rendered YAML: probes, limits and the security context on every container, a
PDB for every Deployment and an HPA in prod, Service ports that exist on the pods,
no ``latest`` image, no literal secret, and the network flows the design needs (and no
others).
"""

from __future__ import annotations

import base64
import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from foodmesh.services import KNOWN
from servers.runtime.config import Settings
from servers.runtime.redis import is_cluster_url

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="pip install kubernetes-validate (the dev extra has it)"
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
#: The Kubernetes version the manifests are validated against (the oldest we support).
K8S_VERSION = "1.33.0"
#: Custom resources with no schema in kubernetes-validate: skipped there, checked below.
CRD_SKIPPED = {("postgresql.cnpg.io/v1", "Cluster")}
#: Secrets made outside the overlay (by an SRE, or by CloudNativePG from its Cluster).
EXTERNAL_SECRETS = {
    "dev": {"foodmesh-auth"},
    "prod": {"foodmesh-auth", "foodmesh-postgres-app"},
}
GRPC = {s.name: s for s in KNOWN}
WORKLOADS = (*GRPC, "gateway", "dashboard")
#: The flows the design needs: caller -> callee (gRPC).
FLOWS = {
    "gateway": set(GRPC),
    "order": {"catalog", "pricing", "eta", "dispatch"},
    "dispatch": {"location", "order", "eta"},
    "location": {"order", "eta", "dispatch"},
    "pricing": {"catalog", "location"},
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here: cannot render the kustomize overlays")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def of_kind(docs: tuple[dict[str, Any], ...], *kinds: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in kinds]


def by_name(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert found, f"no {kind} named {name}"
    return found[0]


def pod_spec(d: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = d["spec"]["template"]["spec"]
    return spec


def containers(d: dict[str, Any], *, init: bool = True) -> Iterator[dict[str, Any]]:
    spec = pod_spec(d)
    yield from spec["containers"]
    if init:
        yield from spec.get("initContainers", [])


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------- render + validate


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_with_every_workload(overlay: str) -> None:
    docs = rendered(overlay)
    names = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    assert set(WORKLOADS) <= names
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert len(namespaces) == 1 and None not in namespaces, namespaces
    counts: dict[str, int] = {}
    for d in docs:
        counts[d["kind"]] = counts.get(d["kind"], 0) + 1
    print(f"overlays/{overlay}: {len(docs)} manifests {dict(sorted(counts.items()))}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_strictly_against_pinned_kubernetes(overlay: str) -> None:
    skipped: set[tuple[str, str]] = set()
    errors: list[str] = []
    for d in rendered(overlay):
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            key = (d["apiVersion"], d["kind"])
            if key not in CRD_SKIPPED:
                errors.append(f"no schema for {key} and it is not an explicitly skipped CRD")
            skipped.add(key)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {path}: {exc.message}")
    assert errors == []
    if overlay == "prod":
        assert skipped == CRD_SKIPPED  # the CloudNativePG Cluster, checked structurally below
    else:
        assert skipped == set()


def test_the_validator_is_strict_about_unknown_fields() -> None:
    d = dict(by_name(rendered("prod"), "Deployment", "order"))
    d = yaml.safe_load(yaml.safe_dump(d))
    d["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"grpc": {"port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)


def test_cloudnative_pg_cluster_is_highly_available_and_feeds_the_services_secret() -> None:
    docs = rendered("prod")
    (cluster,) = [d for d in docs if (d["apiVersion"], d["kind"]) in CRD_SKIPPED]
    spec = cluster["spec"]
    assert set(spec) <= {
        "instances",
        "imageName",
        "primaryUpdateStrategy",
        "inheritedMetadata",
        "bootstrap",
        "postgresql",
        "storage",
        "walStorage",
        "affinity",
        "resources",
        "monitoring",
    }, "a field the CloudNativePG v1 Cluster does not have (or this test does not know)"
    assert spec["instances"] >= 3
    assert ":" in spec["imageName"] and not spec["imageName"].endswith(":latest")
    assert spec["storage"]["size"]
    assert spec["bootstrap"]["initdb"]["database"] == spec["bootstrap"]["initdb"]["owner"]
    assert spec["inheritedMetadata"]["labels"]["foodmesh.io/infra"] == "true"
    assert spec["resources"]["limits"]["memory"]
    # CloudNativePG writes `<cluster>-app` with key `uri`: the Secret every service reads.
    app_secret = f"{cluster['metadata']['name']}-app"
    for d in of_kind(docs, "Deployment"):
        for c in containers(d):
            for e in c.get("env", []):
                if e["name"] == "FOODMESH_POSTGRES_URL":
                    assert e["valueFrom"]["secretKeyRef"] == {"name": app_secret, "key": "uri"}


# ---------------------------------------------------------------- policies


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_limits_and_the_restricted_security_context(overlay: str) -> None:
    problems: list[str] = []
    for d in of_kind(rendered(overlay), *WORKLOAD_KINDS):
        spec = pod_spec(d)
        pod_sc = spec.get("securityContext", {})
        for c in containers(d):
            where = f"{d['kind']}/{d['metadata']['name']}/{c['name']}"
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(kind, {})):
                    problems.append(f"{where}: no cpu+memory {kind}")
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem is writable")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: capabilities not dropped")
            if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                problems.append(f"{where}: may run as root")
            if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
                problems.append(f"{where}: runs as uid 0")
            seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
            if seccomp.get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccomp is not RuntimeDefault")
            if c["image"].split(":")[0].endswith("foodmesh"):
                mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
                if "/tmp" not in mounts:
                    problems.append(f"{where}: read-only root without a writable /tmp")
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_long_running_container_has_liveness_and_readiness_probes(overlay: str) -> None:
    problems: list[str] = []
    for d in of_kind(rendered(overlay), "Deployment", "StatefulSet"):
        for c in containers(d, init=False):
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in c:
                    problems.append(f"{d['metadata']['name']}/{c['name']}: no {probe}")
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_services_use_native_grpc_probes_on_their_port(overlay: str) -> None:
    for name, info in GRPC.items():
        (c,) = containers(by_name(rendered(overlay), "Deployment", name), init=False)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"grpc": info.grpc_port, "metrics": info.metrics_port}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert c[probe]["grpc"]["port"] == info.grpc_port, (name, probe)
        assert c["args"] == [name]  # ENTRYPOINT ["foodmesh", "serve"] + the service


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_get_their_ports_host_and_migrations(overlay: str) -> None:
    docs = rendered(overlay)
    configs = {d["metadata"]["name"]: d.get("data", {}) for d in of_kind(docs, "ConfigMap")}
    for name, info in GRPC.items():
        d = by_name(docs, "Deployment", name)
        (c,) = containers(d, init=False)
        env: dict[str, str] = {}
        for ref in c["envFrom"]:
            env.update(configs[ref["configMapRef"]["name"]])
        up = name.upper()
        assert env["FOODMESH_HOST"] == "0.0.0.0"  # the default 127.0.0.1 is unreachable
        assert env[f"FOODMESH_{up}_PORT"] == str(info.grpc_port)
        assert env[f"FOODMESH_{up}_METRICS_PORT"] == str(info.metrics_port)
        for callee in FLOWS.get(name, ()):
            assert env[f"FOODMESH_{up}_{callee.upper()}_TARGET"] == (
                f"{callee}:{GRPC[callee].grpc_port}"
            )
        (init,) = pod_spec(d)["initContainers"]
        assert init["command"] == ["foodmesh", "migrate", name]
        assert any(e["name"] == "FOODMESH_POSTGRES_URL" for e in init["env"])
    gw = by_name(docs, "Deployment", "gateway")
    (c,) = containers(gw, init=False)
    env = {}
    for ref in c["envFrom"]:
        env.update(configs[ref["configMapRef"]["name"]])
    assert set(env["FOODMESH_GATEWAY_SERVICES"].split(",")) == set(GRPC)
    for name, info in GRPC.items():
        assert env[f"FOODMESH_GATEWAY_{name.upper()}_TARGET"] == f"{name}:{info.grpc_port}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_roll_without_losing_capacity_and_spread(overlay: str) -> None:
    for d in of_kind(rendered(overlay), "Deployment"):
        assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, d["metadata"]
        if d["metadata"]["name"] in WORKLOADS:
            assert pod_spec(d)["topologySpreadConstraints"], d["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_pdb_and_in_prod_an_hpa(overlay: str) -> None:
    docs = rendered(overlay)
    pdbs = of_kind(docs, "PodDisruptionBudget")
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(docs, "HorizontalPodAutoscaler")
    }
    for d in of_kind(docs, "Deployment"):
        name = d["metadata"]["name"]
        if name not in WORKLOADS:
            continue  # the collector and the simulator are optional single pods
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert any(matches(p["spec"]["selector"]["matchLabels"], labels) for p in pdbs), name
        if overlay == "prod":
            hpa = hpas[name]
            assert hpa["apiVersion"] == "autoscaling/v2"
            assert hpa["spec"]["minReplicas"] >= 2
            assert hpa["spec"]["minReplicas"] == d["spec"]["replicas"]
            pdb = next(p for p in pdbs if matches(p["spec"]["selector"]["matchLabels"], labels))
            assert pdb["spec"]["minAvailable"] < d["spec"]["replicas"], name  # drains possible
            kinds = {m["type"] for m in hpa["spec"]["metrics"]}
            assert "Resource" in kinds
        else:
            assert d["spec"]["replicas"] == 1
    if overlay == "prod":
        pods_metrics = [
            m["pods"]["metric"]["name"]
            for m in hpas["location"]["spec"]["metrics"]
            if m["type"] == "Pods"
        ]
        assert pods_metrics == ["foodmesh_location_fixes_per_second"]
    else:
        assert hpas == {}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_port_matches_a_container_port(overlay: str) -> None:
    docs = rendered(overlay)
    pods = [
        (d["spec"]["template"]["metadata"]["labels"], list(containers(d, init=False)))
        for d in of_kind(docs, "Deployment", "StatefulSet")
    ]
    for svc in of_kind(docs, "Service"):
        selected = [cs for labels, cs in pods if matches(svc["spec"]["selector"], labels)]
        assert selected, f"Service {svc['metadata']['name']} selects no pods"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for cs in selected:
                found = {
                    (p.get("name"), p["containerPort"]) for c in cs for p in c.get("ports", [])
                }
                ok = any(target in (n, num) for n, num in found)
                assert ok, f"Service {svc['metadata']['name']} port {target} has no container port"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_image_is_latest_or_untagged(overlay: str) -> None:
    for d in of_kind(rendered(overlay), *WORKLOAD_KINDS):
        for c in containers(d):
            image = c["image"]
            name, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
            assert name and tag and "/" not in tag, f"{image} has no tag"
            assert tag != "latest", f"{d['metadata']['name']}: {image}"
    assert "imageName" in by_name(rendered("prod"), "Cluster", "foodmesh-postgres")["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_literal_secret_and_every_reference_resolves(overlay: str) -> None:
    docs = rendered(overlay)
    secrets = {s["metadata"]["name"]: s for s in of_kind(docs, "Secret")}
    for s in secrets.values():
        values = {**s.get("stringData", {})}
        values.update({k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()})
        for key, value in values.items():
            # The only Secret data allowed here: URLs that carry no password.
            parts = urlsplit(value)
            assert parts.scheme and parts.password is None, f"{s['metadata']['name']}.{key}"
    if overlay == "prod":
        assert secrets == {}, "prod renders no Secret: they are made out of band"
    for cm in of_kind(docs, "ConfigMap"):
        for key, value in cm.get("data", {}).items():
            for word in value.split():
                if "://" in word:
                    assert urlsplit(word.strip("'\",")).password is None, (cm, key)
    configmaps = {c["metadata"]["name"] for c in of_kind(docs, "ConfigMap")}
    for d in of_kind(docs, *WORKLOAD_KINDS):
        for c in containers(d):
            for e in c.get("env", []):
                if "value" in e:
                    assert not any(w in e["name"] for w in ("SECRET", "PASSWORD", "TOKEN")), e
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in secrets:
                    assert ref["name"] in EXTERNAL_SECRETS[overlay], (d["metadata"]["name"], ref)
                cref = e.get("valueFrom", {}).get("configMapKeyRef")
                if cref:
                    assert cref["name"] in configmaps
            for ef in c.get("envFrom", []):
                if "configMapRef" in ef:
                    assert ef["configMapRef"]["name"] in configmaps, ef
                if "secretRef" in ef:
                    assert ef["secretRef"]["name"] in secrets, ef
        for v in pod_spec(d).get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, v
            if "secret" in v:
                assert v["secret"]["secretName"] in secrets, v


# ---------------------------------------------------------------- network policies


def _pod_labels(docs: tuple[dict[str, Any], ...], name: str) -> dict[str, str]:
    for d in of_kind(docs, "Deployment", "StatefulSet"):
        labels: dict[str, str] = d["spec"]["template"]["metadata"]["labels"]
        if labels.get("app.kubernetes.io/name") == name:
            return labels
    raise AssertionError(f"no pods named {name}")


def _port_names(docs: tuple[dict[str, Any], ...], labels: dict[str, str]) -> dict[str, int]:
    for d in of_kind(docs, "Deployment", "StatefulSet"):
        if d["spec"]["template"]["metadata"]["labels"] == labels:
            return {
                p["name"]: p["containerPort"] for c in containers(d) for p in c.get("ports", [])
            }
    return {}


def _peer_ok(peer: dict[str, Any], labels: dict[str, str], ns: dict[str, str], own: str) -> bool:
    if "ipBlock" in peer:
        return False  # no peer of ours is matched by address
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"].get("matchLabels", {}), ns):
            return False
    elif ns.get("kubernetes.io/metadata.name") != own:
        return False
    return matches(peer.get("podSelector", {}).get("matchLabels", {}), labels)


def _rule_ok(
    rule: dict[str, Any],
    peers_key: str,
    labels: dict[str, str],
    ns: dict[str, str],
    own: str,
    port: int,
    names: dict[str, int],
) -> bool:
    peers = rule.get(peers_key)
    if peers is not None and not any(_peer_ok(p, labels, ns, own) for p in peers):
        return False
    ports = rule.get("ports")
    if ports is None:
        return True
    return any(names.get(p["port"], p["port"]) == port for p in ports if "port" in p)


def allowed(
    docs: tuple[dict[str, Any], ...],
    src: dict[str, str],
    dst: dict[str, str],
    port: int,
    *,
    src_ns: str | None = None,
) -> bool:
    """Whether the namespace's NetworkPolicies let pods ``src`` reach ``dst`` on ``port``."""
    own = next(d["metadata"]["namespace"] for d in docs if d["kind"] == "Deployment")
    src_ns = src_ns or own
    policies = of_kind(docs, "NetworkPolicy")
    dst_names = _port_names(docs, dst)

    def applies(p: dict[str, Any], labels: dict[str, str], kind: str) -> bool:
        return kind in p["spec"].get("policyTypes", ["Ingress"]) and matches(
            p["spec"]["podSelector"].get("matchLabels", {}), labels
        )

    if src_ns == own:  # the source's egress is ours to check
        egress = [p for p in policies if applies(p, src, "Egress")]
        own_ns = {"kubernetes.io/metadata.name": own}
        if egress and not any(
            _rule_ok(r, "to", dst, own_ns, own, port, dst_names)
            for p in egress
            for r in p["spec"].get("egress", [])
        ):
            return False
    ingress = [p for p in policies if applies(p, dst, "Ingress")]
    src_ns_labels = {"kubernetes.io/metadata.name": src_ns}
    return not ingress or any(
        _rule_ok(r, "from", src, src_ns_labels, own, port, dst_names)
        for p in ingress
        for r in p["spec"].get("ingress", [])
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_allow_the_designed_flows(overlay: str) -> None:
    docs = rendered(overlay)
    deny = by_name(docs, "NetworkPolicy", "default-deny-all")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    for caller, callees in FLOWS.items():
        for callee in callees:
            port = GRPC[callee].grpc_port
            assert allowed(docs, _pod_labels(docs, caller), _pod_labels(docs, callee), port), (
                f"{caller} -> {callee}:{port} is blocked"
            )
    # And what the design does not need is blocked.
    blocked = [
        ("catalog", "order"),
        ("eta", "order"),
        ("catalog", "pricing"),
        ("order", "location"),
        ("eta", "catalog"),
    ]
    for caller, callee in blocked:
        port = GRPC[callee].grpc_port
        assert not allowed(docs, _pod_labels(docs, caller), _pod_labels(docs, callee), port), (
            f"{caller} -> {callee} is open but no flow needs it"
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_reaches_infrastructure_and_prometheus_scrapes_it(overlay: str) -> None:
    docs = rendered(overlay)
    infra = {
        "dev": {"postgres": 5432, "redis": 6379, "nats": 4222, "otel-collector": 4317},
        "prod": {"redis-cluster": 6379, "nats": 4222, "otel-collector": 4317},
    }[overlay]
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    for name in WORKLOADS:
        src = _pod_labels(docs, name)
        for target, port in infra.items():
            assert allowed(docs, src, _pod_labels(docs, target), port), f"{name} -> {target}"
        if name in GRPC:
            metrics = GRPC[name].metrics_port
            assert allowed(docs, prometheus, src, metrics, src_ns="monitoring"), name
            assert not allowed(docs, prometheus, src, metrics, src_ns="default"), name
    if overlay == "prod":  # CloudNativePG's pods carry the inherited infra label
        cnpg = {"cnpg.io/cluster": "foodmesh-postgres", "foodmesh.io/infra": "true"}
        for name in GRPC:
            assert allowed(docs, _pod_labels(docs, name), cnpg, 5432), name
        nats = _pod_labels(docs, "nats")
        assert allowed(docs, nats, nats, 6222)  # cluster routes
        redis = _pod_labels(docs, "redis-cluster")
        assert allowed(docs, redis, redis, 16379)  # cluster bus


def test_prod_runs_nats_as_a_3_node_jetstream_cluster_and_redis_as_a_6_node_cluster() -> None:
    docs = rendered("prod")
    nats = by_name(docs, "StatefulSet", "nats")
    assert nats["spec"]["replicas"] == 3
    conf = next(
        c["data"]["nats.conf"] for c in of_kind(docs, "ConfigMap") if "nats.conf" in c["data"]
    )
    assert "jetstream" in conf and conf.count("nats://nats-") == 3 and "cluster {" in conf
    common = next(
        c["data"]
        for c in of_kind(docs, "ConfigMap")
        if c["metadata"]["name"].startswith("foodmesh-common")
    )
    assert common["FOODMESH_NATS_REPLICAS"] == "3"
    redis = by_name(docs, "StatefulSet", "redis-cluster")
    assert redis["spec"]["replicas"] == 6
    job = by_name(docs, "Job", "redis-cluster-init")
    script = next(
        c["data"]["cluster-init.sh"]
        for c in of_kind(docs, "ConfigMap")
        if "cluster-init.sh" in c.get("data", {})
    )
    assert "--cluster-replicas 1" in script and "N=6" in script
    # The services talk to it as a cluster (a plain redis:// client would stop at MOVED),
    # and the settings they are started with accept that URL.
    assert common["FOODMESH_REDIS_URL"].startswith("redis+cluster://redis-cluster:")
    settings = Settings.from_env("location", {**common, "FOODMESH_DEV": "1"})
    assert is_cluster_url(settings.redis_url)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-1].endswith(
        "cluster-init.sh"
    )


def test_monitoring_configmaps_carry_the_rule_and_dashboard_files() -> None:
    docs = rendered("prod")
    monitoring = K8S / "components" / "monitoring"
    rules = by_name(docs, "ConfigMap", "foodmesh-prometheus-rules")["data"]["alerts.yaml"]
    assert rules == (monitoring / "alerts.yaml").read_text(encoding="utf-8")
    dash = by_name(docs, "ConfigMap", "foodmesh-grafana-dashboard")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dash["data"]["foodmesh-overview.json"] == (
        monitoring / "grafana-dashboard.json"
    ).read_text(encoding="utf-8")


def test_base_folders_are_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("gen_k8s", ROOT / "deploy" / "gen_k8s.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    sys.modules["gen_k8s"] = gen  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(gen)
    finally:
        del sys.modules["gen_k8s"]
    files = gen.render()
    stale = [str(p.relative_to(ROOT)) for p, t in files.items() if p.read_text() != t]
    assert stale == [], "run `.venv/bin/python deploy/gen_k8s.py` to regenerate"
    assert {w.name for w in gen.WORKLOADS} == set(WORKLOADS)
