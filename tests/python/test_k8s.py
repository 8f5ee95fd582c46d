"""The Kubernetes manifests of deploy/k8s, checked without a cluster (none can run here):

- the committed deploy/k8s/rendered/*.yaml are what scripts/render-k8s makes of the overlays now;
- every object validates against the Kubernetes OpenAPI schemas (kubernetes-validate, strict:
  unknown fields are errors) of an older and a newer Kubernetes release, offline (the package
  ships the schemas);
- the objects refer to each other correctly: Service selectors and target ports, ConfigMaps,
  Secrets, ServiceAccounts, volumes, volume claims, probe ports, PDB and NetworkPolicy selectors,
  the agent's RBAC for EndpointSlices and the Service its resolver names;
- every container runs as non-root with a read-only root filesystem, no privilege escalation,
  no capabilities, requests and limits, a readiness probe on /ready and a liveness probe;
- the configuration files inside the ConfigMaps: the `single` overlay's (store and agent) are
  loaded by the real binary (`spoor config --config FILE`); the `distributed` overlay's uses the
  scale-out's keys (kafka, ingester, querier, `--roles`), checked structurally against the
  StatefulSet they describe, and loaded by the binary too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from conftest import SPOOR_BIN

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ["single", "distributed"]
# The oldest Kubernetes still widely run and a recent one; both bundled with kubernetes-validate.
K8S_VERSIONS = ["1.30.0", "1.34.0"]
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
ROLES = {"distributor", "ingester", "querier", "compactor"}


def rendered(overlay: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / "rendered" / f"{overlay}.yaml").read_text()) if d]


def by_kind(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def workloads(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["kind"] in WORKLOADS]


def pod_labels(w: dict) -> dict[str, str]:
    return w["spec"]["template"]["metadata"].get("labels", {})


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def containers(w: dict) -> list[dict]:
    spec = w["spec"]["template"]["spec"]
    return spec.get("containers", []) + spec.get("initContainers", [])


def config_of(objs: list[dict], configmap: str, key: str) -> str:
    return by_kind(objs, "ConfigMap")[configmap]["data"][key]


# ---------------------------------------------------------------------------------------
# Rendering and schemas


def test_rendered_files_are_up_to_date(tmp_path: Path):
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "render-k8s"), "--out", str(tmp_path)],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    for overlay in OVERLAYS:
        fresh = (tmp_path / f"{overlay}.yaml").read_text()
        committed = (K8S / "rendered" / f"{overlay}.yaml").read_text()
        assert fresh == committed, f"deploy/k8s/rendered/{overlay}.yaml is stale: run scripts/render-k8s"
    assert sorted(p.stem for p in tmp_path.glob("*.yaml")) == sorted(OVERLAYS)


def test_renderer_refuses_what_it_does_not_understand(tmp_path: Path):
    """An overlay key the renderer does not implement is an error, not silently ignored."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("render_k8s", str(REPO / "scripts" / "render-k8s"))
    spec = importlib.util.spec_from_loader("render_k8s", loader)
    render_k8s = importlib.util.module_from_spec(spec)
    loader.exec_module(render_k8s)
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: '1'}\n")
    (tmp_path / "kustomization.yaml").write_text("resources: [cm.yaml]\ncommonLabels: {a: b}\n")
    with pytest.raises(render_k8s.RenderError, match="unsupported keys \\['commonLabels'\\]"):
        render_k8s.render(tmp_path)
    # Patches merge maps, merge named lists by name, replace the rest; namespace and images apply.
    (tmp_path / "d.yaml").write_text("""\
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  template:
    spec:
      containers:
        - {name: a, image: spoor:1, args: [x], env: [{name: A, value: "1"}]}
        - {name: b, image: other:2}
""")
    (tmp_path / "p.yaml").write_text("""\
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  template:
    spec:
      containers:
        - {name: a, args: [y, z], env: [{name: B, value: "2"}]}
        - {name: b, $patch: delete}
""")
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [cm.yaml, d.yaml]\npatches: [{path: p.yaml}]\nnamespace: obs\n"
        "images: [{name: spoor, newName: reg/spoor, newTag: '3'}]\n"
    )
    cm, d = render_k8s.render(tmp_path)
    assert cm["metadata"]["namespace"] == d["metadata"]["namespace"] == "obs"
    assert d["spec"]["template"]["spec"]["containers"] == [
        {
            "name": "a",
            "image": "reg/spoor:3",
            "args": ["y", "z"],
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        }
    ]
    (tmp_path / "kustomization.yaml").write_text("resources: [cm.yaml, cm.yaml]\n")
    with pytest.raises(render_k8s.RenderError, match="defined twice"):
        render_k8s.render(tmp_path)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schema(overlay: str, version: str):
    objs = rendered(overlay)
    assert len(objs) > 10
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(
                f"{overlay}: {obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version}: {e.message} at {list(e.path)}"
            )


def test_the_validator_can_fail():
    """The schemas are really consulted: a misspelt field and a wrong type are refused."""
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"selectr": {"a": "b"}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": "http"}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)


# ---------------------------------------------------------------------------------------
# References between objects


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(overlay: str):
    objs = rendered(overlay)
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert len(names) == len(objs), "an object is defined twice"
    namespaces = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
    assert namespaces == {"observability"} and ("Namespace", "observability") in names

    ws = workloads(objs)
    for svc in by_kind(objs, "Service").values():
        selected = [w for w in ws if matches(svc["spec"]["selector"], pod_labels(w))]
        assert selected, f"Service {svc['metadata']['name']} selects no workload"
        for port in svc["spec"]["ports"]:
            for w in selected:
                declared = {p.get("name") for c in containers(w) for p in c.get("ports", [])} | {
                    p["containerPort"] for c in containers(w) for p in c.get("ports", [])
                }
                assert port["targetPort"] in declared, (
                    f"Service {svc['metadata']['name']} port {port['name']} -> {port['targetPort']}, "
                    f"not a port of {w['metadata']['name']}"
                )
    for w in ws:
        name, spec = w["metadata"]["name"], w["spec"]
        assert matches(spec["selector"]["matchLabels"], pod_labels(w)), f"{name}: selector misses its pods"
        pod = spec["template"]["spec"]
        assert ("ServiceAccount", pod["serviceAccountName"]) in names, (
            f"{name}: no ServiceAccount {pod['serviceAccountName']}"
        )
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        for v in volumes.values():
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in names, f"{name}: no ConfigMap {v['configMap']['name']}"
            if "secret" in v:
                assert ("Secret", v["secret"]["secretName"]) in names, f"{name}: no Secret {v['secret']['secretName']}"
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in names, f"{name}: no PVC {claim}"
        if w["kind"] == "StatefulSet":
            governing = by_kind(objs, "Service").get(spec["serviceName"])
            assert governing and governing["spec"].get("clusterIP") == "None", (
                f"{name}: no headless Service {spec['serviceName']}"
            )
            assert matches(governing["spec"]["selector"], pod_labels(w)), (
                f"{name}: {spec['serviceName']} does not select it"
            )
        for c in containers(w):
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes or m["name"] in claims, (
                    f"{name}/{c['name']}: mount {m['name']} has no volume"
                )
            for e in c.get("envFrom", []):
                ref = e.get("secretRef") or e.get("configMapRef")
                kind = "Secret" if "secretRef" in e else "ConfigMap"
                assert (kind, ref["name"]) in names, f"{name}/{c['name']}: no {kind} {ref['name']}"
            ports = {p.get("name") for p in c.get("ports", [])} | {p["containerPort"] for p in c.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe in c:
                    port = c[probe]["httpGet"]["port"]
                    assert port in ports, f"{name}/{c['name']}: {probe} on undeclared port {port}"

    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for o in by_kind(objs, kind).values():
            sel = o["spec"]["selector" if kind == "PodDisruptionBudget" else "podSelector"]["matchLabels"]
            assert any(matches(sel, pod_labels(w)) for w in ws), f"{kind} {o['metadata']['name']} selects nothing"
    # Every workload with more than one replica, and every stateful one, has a disruption budget.
    for w in ws:
        if w["kind"] != "DaemonSet" and (w["spec"].get("replicas", 1) > 1 or w["kind"] == "StatefulSet"):
            assert any(
                matches(p["spec"]["selector"]["matchLabels"], pod_labels(w))
                for p in by_kind(objs, "PodDisruptionBudget").values()
            ), f"{w['metadata']['name']} has no PodDisruptionBudget"
    # Every pod is covered by a NetworkPolicy for both directions.
    for w in ws:
        policies = [
            p
            for p in by_kind(objs, "NetworkPolicy").values()
            if matches(p["spec"]["podSelector"]["matchLabels"], pod_labels(w))
        ]
        assert {"Ingress", "Egress"} <= {t for p in policies for t in p["spec"]["policyTypes"]}, w["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_agent_reaches_the_store_through_its_resolver(overlay: str):
    objs = rendered(overlay)
    agent = by_kind(objs, "DaemonSet")["spoor-agent"]
    sa = agent["spec"]["template"]["spec"]["serviceAccountName"]
    # RBAC: a RoleBinding gives the agent's ServiceAccount a Role that lists EndpointSlices.
    bindings = [
        b
        for b in by_kind(objs, "RoleBinding").values()
        if {"kind": "ServiceAccount", "name": sa, "namespace": "observability"} in b["subjects"]
    ]
    assert bindings, f"no RoleBinding for ServiceAccount {sa}"
    roles = [by_kind(objs, "Role")[b["roleRef"]["name"]] for b in bindings]
    assert any(
        "discovery.k8s.io" in r["apiGroups"]
        and "endpointslices" in r["resources"]
        and {"list", "get", "watch"} <= set(r["verbs"])
        for role in roles
        for r in role["rules"]
    ), roles
    assert agent["spec"]["template"]["spec"].get("automountServiceAccountToken", True), "the resolver needs the token"
    # The resolver names a headless Service of the store, by a port name it has.
    cfg = yaml.safe_load(config_of(objs, "spoor-agent", "agent.yaml"))
    k8s = cfg["agent"]["exporters"]["loadbalancing"]["resolver"]["k8s"]
    svc = by_kind(objs, "Service")[k8s["service"]]
    assert svc["spec"]["clusterIP"] == "None"
    assert k8s["port_name"] in {p["name"] for p in svc["spec"]["ports"]}
    assert all(
        matches(svc["spec"]["selector"], pod_labels(w))
        for w in workloads(objs)
        if pod_labels(w).get("spoor.dev/otlp") == "true"
    )
    receivers = [w["metadata"]["name"] for w in workloads(objs) if matches(svc["spec"]["selector"], pod_labels(w))]
    assert receivers == {"single": ["spoor"], "distributed": ["spoor-distributor"]}[overlay]
    # The agent's own mounts: its config, and the queue where its data dir is.
    mounts = {m["mountPath"] for m in agent["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert cfg["storage"]["data_dir"] in mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_are_locked_down(overlay: str):
    for w in workloads(rendered(overlay)):
        name, pod = w["metadata"]["name"], w["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, f"{name}: pod may run as root"
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        for c in containers(w):
            where = f"{name}/{c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("runAsUser", psc["runAsUser"]) != 0, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc["capabilities"].get("add"), where
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(part, {})), f"{where}: {part} for cpu and memory"
            assert c["readinessProbe"]["httpGet"]["path"] == "/ready", where
            assert "livenessProbe" in c, where
            image = c["image"]
            assert re.fullmatch(r"[a-z0-9./-]+:[0-9][A-Za-z0-9._-]*", image) and not image.endswith(":latest"), (
                f"{where}: image {image} is not pinned"
            )
            # The data dir is writable (a volume), the root filesystem is not.
            assert any(m["mountPath"].startswith("/var/lib/spoor") for m in c["volumeMounts"]), where


# ---------------------------------------------------------------------------------------
# The configuration inside


def spoor_config(tmp_path: Path, text: str, name: str) -> subprocess.CompletedProcess:
    if not SPOOR_BIN.is_file():
        pytest.fail(f"spoor binary not found at {SPOOR_BIN}; run `cargo build -p spoor` or set SPOOR_BIN")
    path = tmp_path / name
    path.write_text(text)
    env = {"PATH": "/usr/bin:/bin"}  # no SPOOR__* from the caller's shell
    return subprocess.run([str(SPOOR_BIN), "config", "--config", str(path)], capture_output=True, text=True, env=env)


def test_single_overlay_config_loads_in_the_binary(tmp_path: Path):
    objs = rendered("single")
    store = spoor_config(tmp_path, config_of(objs, "spoor", "config.yaml"), "store.yaml")
    assert store.returncode == 0, store.stderr
    effective = yaml.safe_load(store.stdout)
    assert effective["server"]["http_listen"] == "0.0.0.0:3200"
    assert effective["storage"]["backend"] == "s3" and effective["storage"]["data_dir"] == "/var/lib/spoor"
    assert effective["compaction"]["enabled"] is False
    agent = spoor_config(tmp_path, config_of(objs, "spoor-agent", "agent.yaml"), "agent.yaml")
    assert agent.returncode == 0, agent.stderr
    k8s = yaml.safe_load(agent.stdout)["agent"]["exporters"]["loadbalancing"]["resolver"]["k8s"]
    assert k8s["token_file"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert k8s["service"] == "spoor-headless" and k8s["port_name"] == "otlp-grpc"
    # The binary really checks: a misspelt key in the same file is refused, naming it.
    bad = spoor_config(
        tmp_path, config_of(objs, "spoor-agent", "agent.yaml").replace("port_name:", "portname:"), "bad.yaml"
    )
    assert bad.returncode != 0 and "portname" in bad.stderr, bad.stderr
    # The compactor's environment turns compaction on and ingest off.
    compactor = by_kind(objs, "Deployment")["spoor-compactor"]["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e["value"] for e in compactor["env"]} == {
        "SPOOR__INGEST__ENABLED": "false",
        "SPOOR__COMPACTION__ENABLED": "true",
    }
    assert by_kind(objs, "StatefulSet")["spoor"]["spec"]["replicas"] == 3


def test_distributed_overlay_config_matches_its_workloads(tmp_path: Path):
    objs = rendered("distributed")
    text = config_of(objs, "spoor", "config.yaml")
    cfg = yaml.safe_load(text)
    ingesters = by_kind(objs, "StatefulSet")["spoor-ingester"]
    n = ingesters["spec"]["replicas"]
    assert n == 3 and cfg["ingester"]["replicas"] == n and "ordinal" not in cfg["ingester"]
    assert cfg["querier"]["ingesters"] == [
        f"http://spoor-ingester-{i}.{ingesters['spec']['serviceName']}:3200" for i in range(n)
    ]
    assert cfg["kafka"]["brokers"] and cfg["kafka"]["topic"] and cfg["kafka"]["partitions"] >= n
    assert cfg["storage"]["backend"] == "s3" and cfg["storage"]["s3"]["bucket"]
    roles = {}
    for w in workloads(objs):
        args = w["spec"]["template"]["spec"]["containers"][0]["args"]
        if w["metadata"]["name"] == "spoor-agent":
            continue
        assert args[:3] == ["serve", "--config", "/etc/spoor/config.yaml"] and args[3] == "--roles", args
        roles[w["metadata"]["name"]] = set(args[4].split(","))
        assert roles[w["metadata"]["name"]] <= ROLES
    assert roles == {
        "spoor-distributor": {"distributor"},
        "spoor-ingester": {"ingester"},
        "spoor-querier": {"querier"},
        "spoor-compactor": {"compactor"},
    }
    # Only workloads that touch the bucket get its credentials; only the distributors get OTLP.
    for w in workloads(objs):
        c = w["spec"]["template"]["spec"]["containers"][0]
        has_bucket = any(e.get("secretRef", {}).get("name") == "spoor-bucket" for e in c.get("envFrom", []))
        assert has_bucket == (w["metadata"]["name"] in {"spoor-ingester", "spoor-querier", "spoor-compactor"}), w[
            "metadata"
        ]["name"]
    # The real binary loads it (every key exists and the roles and the log fit together).
    r = spoor_config(tmp_path, text, "distributed.yaml")
    assert r.returncode == 0, r.stderr
    effective = yaml.safe_load(r.stdout)
    assert effective["ingester"]["replicas"] == n
