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

from foodmesh.core.redis import is_cluster_url, redis_client
from foodmesh.core.services import KNOWN
from servers.runtime.config import Settings

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="pip install kubernetes-validate (the dev extra has it)"
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
#: The Kubernetes version the manifests are validated against (the oldest we support).
K8S_VERSION = "1.33.0"
#: Custom resources with no schema in kubernetes-validate: skipped there, checked below.
CNPG = ("postgresql.cnpg.io/v1", "Cluster")
CERT_MANAGER = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}
CRD_SKIPPED = {CNPG, *CERT_MANAGER}
#: Secrets made outside the overlay (by an SRE, or by CloudNativePG from its Cluster).
EXTERNAL_SECRETS = {
    # foodmesh-notification (the SMTP relay, VAPID key, SMS provider) is optional.
    "dev": {"foodmesh-auth", "foodmesh-service-auth", "foodmesh-notification"},
    "prod": {
        "foodmesh-auth",
        "foodmesh-service-auth",
        "foodmesh-postgres-app",
        "foodmesh-redis-users",
        "foodmesh-nats-users",
        "foodmesh-notification",
    },
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
    "notification": {"order", "dispatch"},
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}
#: The plaintext gRPC health port of a service served over TLS (prod), for the kubelet.
HEALTH_PORT = 8086
#: The workloads that talk to Redis (servers' ``needs``; the gateway's rate limits) and NATS.
REDIS_USERS = ("catalog", "location", "eta", "pricing", "gateway")
NATS_USERS = ("order", "dispatch", "location", "pricing", "catalog", "notification", "dashboard")


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
        # The CloudNativePG Cluster and cert-manager's resources, checked structurally below.
        assert skipped == CRD_SKIPPED
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
    (cluster,) = [d for d in docs if (d["apiVersion"], d["kind"]) == CNPG]
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
        expected = {"grpc": info.grpc_port, "metrics": info.metrics_port}
        if overlay == "prod":
            # The gRPC port speaks TLS, which the kubelet's probes do not: they ask the
            # plaintext health-only port the service opens for them.
            expected["health"] = HEALTH_PORT
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert env[f"FOODMESH_{name.upper()}_HEALTH_PORT"] == str(HEALTH_PORT)
        assert ports == expected
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert c[probe]["grpc"]["port"] == expected.get("health", info.grpc_port), (
                name,
                probe,
            )
        assert c["livenessProbe"]["grpc"]["service"] == "liveness"
        assert c["args"] == [name]  # ENTRYPOINT ["foodmesh", "serve"] + the service


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_callers_see_every_replica_to_balance_each_call(overlay: str) -> None:
    """A ClusterIP balances connections and a gRPC caller keeps one: every gRPC Service is
    headless (its name resolves to the pods) and every caller dials it by dns:///, so the
    clients' round robin spreads calls over all replicas the HPA runs."""
    docs = rendered(overlay)
    for name in GRPC:
        svc = by_name(docs, "Service", name)
        assert svc["spec"].get("clusterIP") == "None", name
    http = [d for d in of_kind(docs, "Service") if d["metadata"]["name"] in ("gateway",)]
    assert http and all(d["spec"].get("clusterIP") != "None" for d in http)
    targets = {k: v for d in of_kind(docs, "ConfigMap") for k, v in d.get("data", {}).items()
               if k.endswith("_TARGET")}  # fmt: skip
    assert targets and all(v.startswith("dns:///") for v in targets.values()), targets
    sim = [d for d in docs if d.get("kind") == "Deployment"
           and d["metadata"]["name"] == "simulator"]  # fmt: skip
    for d in sim:
        (c,) = containers(d, init=False)
        assert all(a.startswith(("--location-target=dns:///", "--dispatch-target=dns:///"))
                   for a in c["args"] if "-target=" in a)  # fmt: skip


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
                f"dns:///{callee}:{GRPC[callee].grpc_port}"
            )
        init, *more = pod_spec(d)["initContainers"]
        assert init["command"] == ["foodmesh", "migrate", name]
        assert any(e["name"] == "FOODMESH_POSTGRES_URL" for e in init["env"])
        assert [m["name"] for m in more] == (["models"] if name == "eta" else [])
    gw = by_name(docs, "Deployment", "gateway")
    (c,) = containers(gw, init=False)
    env = {}
    for ref in c["envFrom"]:
        env.update(configs[ref["configMapRef"]["name"]])
    assert set(env["FOODMESH_GATEWAY_SERVICES"].split(",")) == set(GRPC)
    for name, info in GRPC.items():
        assert env[f"FOODMESH_GATEWAY_{name.upper()}_TARGET"] == f"dns:///{name}:{info.grpc_port}"


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
    issued = {
        c["spec"]["secretName"]
        for c in of_kind(docs, "Certificate")
        if c["apiVersion"].startswith("cert-manager.io/")
    }
    for d in of_kind(docs, *WORKLOAD_KINDS):
        for c in containers(d):
            from_secrets = {
                e["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
            }
            for e in c.get("env", []):
                if "value" in e:
                    assert not any(w in e["name"] for w in ("SECRET", "PASSWORD", "TOKEN")), e
                    if "://" in e["value"]:
                        # A URL's password is only ever a reference to a Secret's key.
                        password = urlsplit(e["value"]).password
                        assert password is None or (
                            password.startswith("$(")
                            and password.endswith(")")
                            and password[2:-1] in from_secrets
                        ), e
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
                name = v["secret"]["secretName"]
                assert name in secrets or name in EXTERNAL_SECRETS[overlay] or name in issued, v


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


# ---------------------------------------------------------------- prod: identities and TLS


def _env(c: dict[str, Any]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = c.get("env", [])
    return env


def _expand(c: dict[str, Any], var: str, secrets: dict[tuple[str, str], str]) -> str:
    """The value of ``var`` as the kubelet makes it: ``$(X)`` from variables listed before."""
    values: dict[str, str] = {}
    for e in _env(c):
        if "value" in e:
            value = e["value"]
            for name, known in values.items():
                value = value.replace(f"$({name})", known)
            values[e["name"]] = value
        elif ref := e.get("valueFrom", {}).get("secretKeyRef"):
            values[e["name"]] = secrets.get((ref["name"], ref["key"]), "<other secret>")
    return values[var]


def test_prod_redis_has_an_acl_user_per_service_limited_to_its_keys() -> None:
    docs = rendered("prod")
    acl_map = next(c for c in of_kind(docs, "ConfigMap") if "users.acl" in c.get("data", {}))
    users = {
        line.split()[1]: line.split()[2:]
        for line in acl_map["data"]["users.acl"].splitlines()
        if line.startswith("user ")
    }
    assert set(users) == {"default", "admin", "replica", *REDIS_USERS}
    # Without a password one may only PING (probes); every other user gets its password
    # from the Secret in the pod (acl-init.sh), none is in the file.
    assert users["default"] == ["on", "nopass", "resetkeys", "resetchannels", "-@all", "+ping"]
    assert not any(r.startswith((">", "#")) for rules in users.values() for r in rules)
    for name in REDIS_USERS:
        rules = users[name]
        patterns = [r for r in rules if r.startswith("~")]
        assert patterns and "~*" not in patterns and "allkeys" not in rules, (name, rules)
        assert "+@all" not in rules and "-@dangerous" in rules and "-@admin" in rules, name
    assert "~catalog:*" in users["catalog"] and "~quote:*" in users["pricing"]
    assert not set(users["catalog"]) & {"~quote:*", "~driver:*", "~eta:*", "~gw:rl:*"}
    # The nodes start from the ACL file acl-init.sh writes; replicas authenticate as `replica`.
    redis = by_name(docs, "StatefulSet", "redis-cluster")
    (init,) = pod_spec(redis)["initContainers"]
    assert init["command"][-1].endswith("acl-init.sh")
    (valkey,) = containers(redis, init=False)
    assert valkey["args"][0] == "/acl/valkey.conf"
    volumes = {v["name"]: v for v in pod_spec(redis)["volumes"]}
    assert volumes["acl-users"]["secret"]["secretName"] == "foodmesh-redis-users"
    assert volumes["acl"]["emptyDir"]["medium"] == "Memory"
    script = acl_map["data"]["acl-init.sh"]
    assert "masteruser replica" in script and "masterauth" in script
    job = by_name(docs, "Job", "redis-cluster-init")
    (cli,) = containers(job)
    assert {e["name"] for e in _env(cli)} >= {"REDIS_USER", "REDISCLI_AUTH"}


@pytest.mark.parametrize("name", REDIS_USERS)
def test_prod_services_reach_redis_as_their_own_user(name: str) -> None:
    (c,) = containers(by_name(rendered("prod"), "Deployment", name), init=False)
    names = [e["name"] for e in _env(c)]
    assert names.index("FOODMESH_REDIS_PASSWORD") < names.index("FOODMESH_REDIS_URL")
    ref = next(e for e in _env(c) if e["name"] == "FOODMESH_REDIS_PASSWORD")
    assert ref["valueFrom"]["secretKeyRef"] == {"name": "foodmesh-redis-users", "key": name}
    password = "0123abcd" * 8
    url = _expand(c, "FOODMESH_REDIS_URL", {("foodmesh-redis-users", name): password})
    assert url == f"redis+cluster://{name}:{password}@redis-cluster:6379"
    # The settings accept it, and the runtime's factory hands the credentials to the client.
    settings = Settings.from_env(name, {"FOODMESH_REDIS_URL": url, "FOODMESH_DEV": "1"})
    client = redis_client(settings.redis_url, name=name)
    kwargs = client.nodes_manager.connection_kwargs  # type: ignore[attr-defined]
    assert (kwargs["username"], kwargs["password"]) == (name, password)


def test_prod_nats_has_a_user_per_workload_that_publishes_only_its_events() -> None:
    docs = rendered("prod")
    auth = next(c for c in of_kind(docs, "ConfigMap") if "auth.conf" in c.get("data", {}))
    conf = auth["data"]["auth.conf"]
    assert "include ../nats/nats.conf" in auth["data"]["main.conf"]
    blocks = conf.split("user: ")[1:]
    users = {b.split()[0]: b for b in blocks}
    assert set(users) == set(NATS_USERS)

    def publish(user: str) -> list[str]:
        line = next(x for x in users[user].splitlines() if "publish:" in x)
        return [p.strip(' "') for p in line.split("[", 1)[1].split("]")[0].split(",")]

    for user, block in users.items():
        assert f"password: $NATS_PASSWORD_{user.upper()}" in block  # from the env, not here
        if "publish: {allow:" in block:
            subjects = publish(user)
            assert ">" not in subjects and "$JS.API.>" not in subjects, user
    assert "orders.v1.>" in publish("order")
    assert not any(p.startswith(("dispatch.", "location.")) for p in publish("order"))
    assert not any(p.startswith(("orders.", "location.")) for p in publish("dispatch"))
    assert 'publish: {deny: [">"]}' in users["dashboard"]  # it only reads
    nats = by_name(docs, "StatefulSet", "nats")
    (server,) = containers(nats, init=False)
    assert server["args"] == ["--config", "/etc/nats-auth/main.conf"]
    env = {e["name"]: e for e in _env(server)}
    for user in NATS_USERS:
        ref = env[f"NATS_PASSWORD_{user.upper()}"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "foodmesh-nats-users", "key": user}
    for user in NATS_USERS:
        (c,) = containers(by_name(docs, "Deployment", user), init=False)
        url = _expand(c, "FOODMESH_NATS_URL", {("foodmesh-nats-users", user): "pw"})
        assert url == f"nats://{user}:pw@nats:4222"


def test_prod_grpc_is_tls_with_a_cert_manager_certificate_per_workload() -> None:
    docs = rendered("prod")
    issuers = {i["metadata"]["name"]: i["spec"] for i in of_kind(docs, "Issuer")}
    assert issuers["foodmesh-ca"] == {"ca": {"secretName": "foodmesh-ca"}}
    certs = {
        c["metadata"]["name"]: c["spec"]
        for c in of_kind(docs, "Certificate")
        if c["apiVersion"] == "cert-manager.io/v1"
    }
    assert certs["foodmesh-ca"]["isCA"] is True
    configs = {d["metadata"]["name"]: d.get("data", {}) for d in of_kind(docs, "ConfigMap")}
    dialled: set[str] = set()
    for cm in configs.values():
        dialled |= {
            v.removeprefix("dns:///").split(":")[0] for k, v in cm.items() if k.endswith("_TARGET")
        }
    for name in WORKLOADS:
        spec = certs[f"{name}-tls"]
        assert spec["issuerRef"] == {"name": "foodmesh-ca", "kind": "Issuer"}
        assert name in spec["dnsNames"] and spec["secretName"] == f"{name}-tls"
        d = by_name(docs, "Deployment", name)
        (c,) = containers(d, init=False)
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(d)["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == f"{name}-tls"
        env = {e["name"]: e.get("value") for e in _env(c)}
        assert env["FOODMESH_TLS_CA"] == f"{mounts['tls']}/ca.crt"
        if name in GRPC:
            assert env["FOODMESH_TLS_CERT"] == f"{mounts['tls']}/tls.crt"
            assert env["FOODMESH_TLS_KEY"] == f"{mounts['tls']}/tls.key"
            (port,) = [
                p for p in by_name(docs, "Service", name)["spec"]["ports"] if p["name"] == "grpc"
            ]
            assert port.get("appProtocol") != "kubernetes.io/h2c", name  # it is TLS now
    # Every name a caller dials is on the callee's certificate.
    for host in dialled:
        assert host in certs[f"{host}-tls"]["dnsNames"], host
    # Dev stays plaintext: no certificates and no TLS settings.
    dev = rendered("dev")
    assert not [d for d in dev if (d["apiVersion"], d["kind"]) in CERT_MANAGER]
    for d in of_kind(dev, "Deployment"):
        for c in containers(d):
            assert not any(e["name"].startswith("FOODMESH_TLS_") for e in _env(c))


def test_prod_ingress_serves_the_gateway_and_dashboard_over_tls_only() -> None:
    docs = rendered("prod")
    (ingress,) = of_kind(docs, "Ingress")
    spec = ingress["spec"]
    tls_hosts = {h for t in spec["tls"] for h in t["hosts"]}
    assert all(t["secretName"] for t in spec["tls"])
    backends = {}
    for rule in spec["rules"]:
        assert rule["host"] in tls_hosts, rule["host"]
        for path in rule["http"]["paths"]:
            backends[rule["host"]] = path["backend"]["service"]
    assert sorted(b["name"] for b in backends.values()) == ["dashboard", "gateway"]
    assert all(b["port"] == {"name": "http"} for b in backends.values())
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
    assert "cert-manager.io/cluster-issuer" in annotations
    for name in ("gateway", "dashboard"):  # the Ingress's backends exist and are reachable
        svc = by_name(docs, "Service", name)
        assert any(p["name"] == "http" for p in svc["spec"]["ports"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_services_hold_the_service_key(overlay: str) -> None:
    """The services' own key reaches the gRPC services and the simulator, never the gateway or
    the dashboard (which must not be able to mint a token the services take)."""
    docs = rendered(overlay)
    holders = set()
    for d in of_kind(docs, "Deployment"):
        for c in containers(d, init=False):
            for e in c.get("env", []):
                if e["name"] == "FOODMESH_SERVICE_SECRET":
                    ref = e["valueFrom"]["secretKeyRef"]
                    assert (ref["name"], ref["key"]) == ("foodmesh-service-auth", "service-secret")
                    assert ref.get("optional", False) == (overlay == "dev")
                    holders.add(d["metadata"]["name"])
    services = {s.name for s in KNOWN}
    assert services <= holders
    assert not holders & {"gateway", "dashboard"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_eta_replicas_share_one_model_store_seeded_with_the_shipped_model(overlay: str) -> None:
    docs = rendered(overlay)
    d = by_name(docs, "Deployment", "eta")
    (c,) = containers(d, init=False)
    configs = {x["metadata"]["name"]: x.get("data", {}) for x in of_kind(docs, "ConfigMap")}
    env: dict[str, str] = {}
    for ref in c["envFrom"]:
        env.update(configs[ref["configMapRef"]["name"]])
    models = env["FOODMESH_ETA_MODEL_DIR"]
    assert float(env["FOODMESH_ETA_RETRAIN_EVERY_S"]) > 0
    assert any(e["name"] == "FOODMESH_POSTGRES_URL" for e in c["env"])  # deliveries, lease
    seed = next(i for i in pod_spec(d)["initContainers"] if i["name"] == "models")
    assert seed["command"][-2:] == ["/opt/foodmesh/models", models]
    # One claim for every replica (not a volume per pod), mounted where the service reads
    # and the seed writes; shared across nodes in prod.
    volumes = {v["name"]: v for v in pod_spec(d)["volumes"]}
    claims = set()
    for container in (c, seed):
        mount = next(m for m in container["volumeMounts"] if models.startswith(m["mountPath"]))
        assert not mount.get("readOnly")
        claims.add(volumes[mount["name"]]["persistentVolumeClaim"]["claimName"])
    (claim,) = claims
    pvc = by_name(docs, "PersistentVolumeClaim", claim)
    modes = pvc["spec"]["accessModes"]
    assert modes == (["ReadWriteMany"] if overlay == "prod" else ["ReadWriteOnce"])
    if overlay == "prod":
        assert d["spec"]["replicas"] > 1
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "train-eta" in dockerfile and "COPY --from=model /opt/foodmesh/models" in dockerfile
