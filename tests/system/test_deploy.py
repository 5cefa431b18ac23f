# SPDX-License-Identifier: MIT
"""The deployment files: deploy/k8s (rendered and cross-checked), deploy/docker, deploy/systemd
and `make install`.

Kubernetes: each overlay under deploy/k8s/overlays/ is rendered by a small kustomize renderer
(resources, namespace, images, patches: strategic merge and $patch: delete, by path or inline;
anything else is refused, so the real `kubectl kustomize` stays the reference). Where kubectl is
installed, its rendering must be the same objects. Then: every document has apiVersion, kind and
metadata.name; every ConfigMap, Secret, key, volume and port that a pod, Service, probe,
NetworkPolicy or PodDisruptionBudget names exists (CronJobs' pods included); selectors match
pods; the node's probes are /healthz on the REST port (readiness must not hang on etcd), the
prober's liveness is its --healthcheck; etcd speaks TLS with client certificates to clients
and peers, and its scripts parse (sh -n); anti-affinity, resources and the security context
are set; deploy/k8s itself renders the example overlay; the dhaf
config in the ConfigMap, after the init container's name substitution (its very script is run),
passes `dhaf-node --check-config` with the Secret's keys as files, and the prober's config passes
`dhaf-prober --check-config`.

systemd: `systemd-analyze verify` (no warning allowed) and `systemd-analyze security` of the
units, else a parse of the required keys. Docker: the Dockerfile's stages, packages, user,
HEALTHCHECK and entry point (tests/deploy/ builds and runs it, and installs the packages).
`make install DESTDIR=... PREFIX=/usr` installs the binaries, units, docs and example configs.

usage: /usr/bin/python3 test_deploy.py SOURCE_DIR BUILD_BIN_DIR"""
import copy
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import run_tests  # noqa: E402

SRC = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
BIN = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(SRC, "build", "bin"))
K8S = os.path.join(SRC, "deploy", "k8s")
OVERLAYS = sorted(d for d in os.listdir(os.path.join(K8S, "overlays"))
                  if os.path.isfile(os.path.join(K8S, "overlays", d, "kustomization.yaml")))
# Objects an overlay expects the operator to create by hand (its kustomization.yaml says so).
# The TLS Secrets come from deploy/k8s/etcd-certs.sh.
ETCD_TLS = {("Secret", "etcd-tls"), ("Secret", "dhaf-etcd-client"),
            ("Secret", "etcd-maintenance-client")}
EXTERNAL = {"external-etcd": {("Secret", "dhaf-secrets"), ("Secret", "dhaf-etcd-client")},
            "example": ETCD_TLS}
# The footprint measured in docs/deploy.md: a node's resident set, MiB (rounded up).
MEASURED_NODE_RSS_MIB = 25

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# ------------------------------------------------------------------ a minimal kustomize

class RenderError(Exception):
    pass


# Strategic-merge keys of the lists we may patch (the Kubernetes API's patchMergeKey).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name",
              "volumes": "name", "volumeMounts": "mountPath", "env": "name",
              "imagePullSecrets": "name", "volumeDevices": "devicePath"}


def smp(base, patch, key=None):
    """Strategic merge of patch into base (both plain YAML data); returns the result."""
    if isinstance(patch, dict) and isinstance(base, dict):
        if "$patch" in patch:
            raise RenderError(f"$patch: {patch['$patch']} inside an object is not supported")
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = smp(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(patch, list) and isinstance(base, list):
        mk = MERGE_KEYS.get(key)
        if key == "ports" and patch and all(isinstance(p, dict) for p in patch):
            mk = "containerPort" if "containerPort" in patch[0] else "port"
        if mk and all(isinstance(p, dict) and mk in p for p in patch + base):
            out = [copy.deepcopy(b) for b in base]
            for p in patch:
                for i, b in enumerate(out):
                    if b[mk] == p[mk]:
                        out[i] = smp(b, p)
                        break
                else:
                    out.append(copy.deepcopy(p))
            return out
    return copy.deepcopy(patch)


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def pod_templates(doc):
    """The pod specs of a workload (or a Pod)."""
    if doc.get("kind") in WORKLOADS or doc.get("kind") == "Job":
        return [doc["spec"]["template"]["spec"]]
    if doc.get("kind") == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    if doc.get("kind") == "Pod":
        return [doc["spec"]]
    return []


def all_containers(spec):
    return spec.get("initContainers", []) + spec.get("containers", [])


def set_image(image, rules):
    m = re.match(r"^([^@]+?)(?::([^:/@]+))?(?:@(.+))?$", image)
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    for r in rules:
        if r["name"] == name:
            name = r.get("newName", name)
            if "newTag" in r:
                tag, digest = r["newTag"], None
            if "digest" in r:
                tag, digest = None, r["digest"]
            break
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def render(kdir):
    """Renders the kustomization in kdir: a list of objects."""
    kfile = os.path.join(kdir, "kustomization.yaml")
    with open(kfile) as f:
        k = yaml.safe_load(f)
    supported = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
    extra = set(k) - supported
    if extra:
        raise RenderError(f"{kfile}: this test's renderer does not know {sorted(extra)}; "
                          "extend it (or use only resources/namespace/images/patches)")
    docs = []
    for r in k.get("resources", []):
        p = os.path.normpath(os.path.join(kdir, r))
        if os.path.isdir(p):
            docs += render(p)
        elif os.path.isfile(p):
            docs += load_docs(p)
        else:
            raise RenderError(f"{kfile}: resource {r} does not exist")
    for patch in k.get("patches", []):
        if set(patch) - {"path", "patch"}:
            raise RenderError(f"{kfile}: patch fields {sorted(set(patch))} are not supported")
        if "path" in patch:
            pdocs = load_docs(os.path.join(kdir, patch["path"]))
        else:
            pdocs = [d for d in yaml.safe_load_all(patch["patch"]) if d is not None]
        if len(pdocs) != 1:
            raise RenderError(f"{kfile}: a patch must be one document ({patch})")
        pd = pdocs[0]
        hits = [i for i, d in enumerate(docs)
                if d["kind"] == pd["kind"] and d["metadata"]["name"] == pd["metadata"]["name"]
                and d["apiVersion"] == pd["apiVersion"]]
        if len(hits) != 1:
            raise RenderError(f"{kfile}: patch {pd['kind']}/{pd['metadata']['name']} matches "
                              f"{len(hits)} objects")
        if pd.get("$patch") == "delete":
            del docs[hits[0]]
        else:
            docs[hits[0]] = smp(docs[hits[0]], pd)
    if "namespace" in k:
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                d.setdefault("metadata", {})["namespace"] = k["namespace"]
    for d in docs:
        for spec in pod_templates(d):
            for c in all_containers(spec):
                c["image"] = set_image(c["image"], k.get("images", []))
    return docs


def canonical(x, key=None):
    """For comparing two renderings: merge-keyed lists sorted, no ordering of objects."""
    if isinstance(x, dict):
        return {k: canonical(v, k) for k, v in x.items()}
    if isinstance(x, list):
        items = [canonical(v) for v in x]
        mk = MERGE_KEYS.get(key)
        if mk and all(isinstance(v, dict) and mk in v for v in items):
            items.sort(key=lambda v: str(v[mk]))
        return items
    return x


def by_id(docs):
    return {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}


# ------------------------------------------------------------------ helpers for the checks

def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def quantity(q):
    """A Kubernetes quantity as a float (cores or bytes)."""
    q = str(q)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for u, f in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if q.endswith(u):
            return float(q[:-len(u)]) * f
    return float(q)


def workload(docs, kind, name):
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} objects"
    return hits[0]


def container(spec, name):
    hits = [c for c in all_containers(spec) if c["name"] == name]
    assert len(hits) == 1, f"container {name}: {len(hits)}"
    return hits[0]


def pods(docs):
    """(workload, pod labels, pod spec) of every workload and CronJob."""
    out = []
    for d in docs:
        if d["kind"] in WORKLOADS:
            t = d["spec"]["template"]
        elif d["kind"] == "CronJob":
            t = d["spec"]["jobTemplate"]["spec"]["template"]
        else:
            continue
        out.append((d, t["metadata"].get("labels", {}), t["spec"]))
    return out


def check_structure(name, docs):
    seen = set()
    for d in docs:
        assert isinstance(d, dict), f"{name}: a document is not a mapping: {d!r}"
        for k in ("apiVersion", "kind", "metadata"):
            assert d.get(k), f"{name}: a document without {k}: {str(d)[:200]}"
        n = d["metadata"].get("name")
        assert isinstance(n, str) and DNS1123.match(n) and len(n) <= 63, \
            f"{name}: {d['kind']} has no valid metadata.name ({n!r})"
        ident = (d["kind"], d["metadata"].get("namespace"), n)
        assert ident not in seen, f"{name}: {ident} twice"
        seen.add(ident)
        if d["kind"] not in CLUSTER_SCOPED and name != "base":
            assert d["metadata"].get("namespace"), f"{name}: {d['kind']}/{n} has no namespace"
        # Nothing that a YAML file could have turned into something else by accident.
        json.dumps(d)


def check_references(name, docs):
    objs = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    external = EXTERNAL.get(name, set())

    def need(kind, obj_name, key=None, where=""):
        if (kind, obj_name) in external:
            return
        assert (kind, obj_name) in objs, f"{name}: {where} names {kind} {obj_name}, not rendered"
        if key is not None:
            o = objs[(kind, obj_name)]
            keys = set(o.get("data") or {}) | set(o.get("stringData") or {})
            assert key in keys, f"{name}: {where} names key {key} of {kind} {obj_name} ({keys})"

    for wl, labels, spec in pods(docs):
        where = f"{wl['kind']}/{wl['metadata']['name']}"
        assert wl["kind"] == "CronJob" or matches(wl["spec"]["selector"]["matchLabels"], labels), \
            f"{name}: {where}: the selector does not match its own pods"
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in wl["spec"].get("volumeClaimTemplates", [])}
        used = set()
        for v in volumes.values():
            if "configMap" in v:
                for it in v["configMap"].get("items", []) or [None]:
                    need("ConfigMap", v["configMap"]["name"], it and it["key"], where)
            if "secret" in v:
                for it in v["secret"].get("items", []) or [None]:
                    need("Secret", v["secret"]["secretName"], it and it["key"], where)
            if "persistentVolumeClaim" in v:
                need("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"], None, where)
        for c in all_containers(spec):
            cw = f"{where} container {c['name']}"
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes or m["name"] in claims, \
                    f"{name}: {cw} mounts {m['name']}, which is no volume"
                used.add(m["name"])
                v = volumes.get(m["name"], {})
                if m.get("subPath") and "configMap" in v:
                    need("ConfigMap", v["configMap"]["name"], m["subPath"], cw)
            for ef in c.get("envFrom", []):
                if "configMapRef" in ef:
                    need("ConfigMap", ef["configMapRef"]["name"], None, cw)
                if "secretRef" in ef:
                    need("Secret", ef["secretRef"]["name"], None, cw)
            for e in c.get("env", []):
                vf = e.get("valueFrom", {})
                if "configMapKeyRef" in vf:
                    need("ConfigMap", vf["configMapKeyRef"]["name"], vf["configMapKeyRef"]["key"], cw)
                if "secretKeyRef" in vf:
                    need("Secret", vf["secretKeyRef"]["name"], vf["secretKeyRef"]["key"], cw)
            # Probes name ports of their own container.
            ports = c.get("ports", [])
            for pk in ("livenessProbe", "readinessProbe", "startupProbe"):
                pr = c.get(pk)
                if not pr:
                    continue
                for how in ("httpGet", "tcpSocket", "grpc"):
                    if how in pr:
                        p = pr[how]["port"]
                        ok = any(p in (q.get("name"), q["containerPort"]) for q in ports)
                        assert ok, f"{name}: {cw} {pk} uses port {p}, which it does not declare"
        unused = set(volumes) - used
        assert not unused, f"{name}: {where}: volumes no container mounts: {sorted(unused)}"
        if wl["kind"] == "StatefulSet":
            svc = objs.get(("Service", wl["spec"]["serviceName"]))
            assert svc, f"{name}: {where}: serviceName {wl['spec']['serviceName']} is no Service"
            assert svc["spec"].get("clusterIP") == "None", f"{name}: {where}: not headless"
            assert matches(svc["spec"]["selector"], labels), f"{name}: {where}: its Service selects other pods"

    def selected(selector):
        return [(wl, labels, spec) for wl, labels, spec in pods(docs) if matches(selector, labels)]

    for d in docs:
        where = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "Service":
            sel = selected(d["spec"].get("selector"))
            assert sel, f"{name}: {where} selects no pods"
            for sp in d["spec"]["ports"]:
                tp = sp.get("targetPort", sp["port"])
                for wl, _l, spec in sel:
                    ok = any(tp in (q.get("name"), q["containerPort"])
                             for c in spec["containers"] for q in c.get("ports", []))
                    assert ok, f"{name}: {where} targetPort {tp} is no port of {wl['metadata']['name']}"
        if d["kind"] == "PodDisruptionBudget":
            sel = selected(d["spec"]["selector"]["matchLabels"])
            assert len(sel) == 1, f"{name}: {where} selects {len(sel)} workloads"
            replicas = sel[0][0]["spec"].get("replicas", 1)
            assert 0 < d["spec"]["minAvailable"] < replicas, \
                f"{name}: {where}: minAvailable {d['spec']['minAvailable']} of {replicas} replicas"
        if d["kind"] == "NetworkPolicy":
            assert selected(d["spec"]["podSelector"]["matchLabels"]), f"{name}: {where} selects no pods"
            for rule in d["spec"].get("ingress", []):
                for fr in rule.get("from", []):
                    if "podSelector" in fr:
                        assert selected(fr["podSelector"]["matchLabels"]), \
                            f"{name}: {where}: a from: selects no pods"
                for p in rule.get("ports", []):
                    targets = selected(d["spec"]["podSelector"]["matchLabels"])
                    ok = all(any(p["port"] in (q.get("name"), q["containerPort"])
                                 for c in spec["containers"] for q in c.get("ports", []))
                             for _w, _l, spec in targets)
                    assert ok, f"{name}: {where}: port {p['port']} is no port of its pods"


def check_workloads(name, docs):
    node = workload(docs, "StatefulSet", "dhaf-node")
    assert node["spec"]["replicas"] == 3, "dhaf-node: 3 replicas"
    prober = workload(docs, "Deployment", "dhaf-prober")
    assert prober["spec"]["replicas"] == 1 and prober["spec"]["strategy"]["type"] == "Recreate", \
        "dhaf-prober: one pod, never two voting under one name"
    has_etcd = any(d["kind"] == "StatefulSet" and d["metadata"]["name"] == "etcd" for d in docs)
    if name != "external-etcd":
        assert has_etcd, f"{name}: no etcd"
    else:
        assert not has_etcd and not any(d["metadata"]["name"] == "etcd" for d in docs), \
            "external-etcd still renders the base's etcd"
    sets = [node] + ([workload(docs, "StatefulSet", "etcd")] if has_etcd else [])
    for wl in sets:
        n = wl["metadata"]["name"]
        assert wl["spec"]["replicas"] == 3, f"{n}: 3 replicas"
        labels = wl["spec"]["template"]["metadata"]["labels"]
        aa = wl["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        req = aa.get("requiredDuringSchedulingIgnoredDuringExecution", [])
        pref = [t["podAffinityTerm"]
                for t in aa.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
        host = [t for t in req if t["topologyKey"] == "kubernetes.io/hostname"
                and matches(t["labelSelector"]["matchLabels"], labels)]
        zone = [t for t in req + pref if t["topologyKey"] == "topology.kubernetes.io/zone"
                and matches(t["labelSelector"]["matchLabels"], labels)]
        assert host, f"{n}: no required anti-affinity across Kubernetes nodes"
        assert zone, f"{n}: no anti-affinity across zones"
        assert any(d["kind"] == "PodDisruptionBudget"
                   and matches(d["spec"]["selector"]["matchLabels"], labels) for d in docs), \
            f"{n}: no PodDisruptionBudget"
    assert prober["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"], "prober: anti-affinity"

    images = set()
    for wl, _labels, spec in pods(docs):
        n = wl["metadata"]["name"]
        assert spec.get("automountServiceAccountToken") is False, f"{n}: mounts an API token"
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, f"{n}: runAsNonRoot"
        for c in all_containers(spec):
            cn = f"{n}/{c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, f"{cn}: allowPrivilegeEscalation"
            assert sc.get("readOnlyRootFilesystem") is True, f"{cn}: readOnlyRootFilesystem"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{cn}: capabilities"
            res = c.get("resources", {})
            for r in ("cpu", "memory"):
                assert r in res.get("requests", {}), f"{cn}: no {r} request"
            assert "memory" in res.get("limits", {}), f"{cn}: no memory limit"
            assert quantity(res["requests"]["memory"]) <= quantity(res["limits"]["memory"]), \
                f"{cn}: memory request above the limit"
            if c["image"].split("/")[-1].startswith("dhaf"):
                images.add(c["image"])
    assert len(images) == 1, f"{name}: the dhaf containers run different images: {images}"
    if name == "example":
        assert images == {"registry.example.com/dhaf:0.1.0"}, images

    main = container(node["spec"]["template"]["spec"], "dhaf-node")
    mem = quantity(main["resources"]["requests"]["memory"]) / 2**20
    assert mem >= MEASURED_NODE_RSS_MIB * 1.5, \
        f"dhaf-node: memory request {mem} MiB, below 1.5 x the measured {MEASURED_NODE_RSS_MIB} MiB"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness is not /healthz"
    # Readiness must not depend on etcd: dhaf-api keeps its endpoints through an etcd outage.
    assert main["readinessProbe"]["httpGet"]["path"] == "/healthz", "readiness is not /healthz"
    rest = [p for p in main["ports"] if p.get("name") == "rest"]
    assert rest and main["livenessProbe"]["httpGet"]["port"] in ("rest", rest[0]["containerPort"]) \
        and main["readinessProbe"]["httpGet"]["port"] in ("rest", rest[0]["containerPort"]), \
        "the probes are not on the REST port"
    return node


def config_files(text):
    """Every `*-file:` (and `credentials-path:`) value of a dhaf config: the secret files."""
    out = []

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if isinstance(v, str) and (str(k).endswith("-file") or k == "credentials-path"):
                    out.append(v)
                else:
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk(yaml.safe_load(text))
    return out


def secret_mounts(docs, spec, c):
    """{mountPath: (secret name, [keys] or None when the Secret is not rendered)} of c."""
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    out = {}
    for m in c.get("volumeMounts", []):
        v = vols.get(m["name"], {})
        if "secret" in v:
            sn = v["secret"]["secretName"]
            if v["secret"].get("items"):
                keys = [it["path"] for it in v["secret"]["items"]]
            elif sn in secrets:
                s = secrets[sn]
                keys = list(s.get("data") or {}) + list(s.get("stringData") or {})
            else:
                keys = None
            out[m["mountPath"].rstrip("/")] = (sn, keys)
    return out


def fake_secrets(tmp, text, mounts, who):
    """Creates a dummy file for every secret file the config names (each must be in one of
    the mounts and, where the Secret is rendered, be one of its keys); returns the config with
    the mount paths moved into tmp."""
    for path in config_files(text):
        d, base = os.path.split(path)
        assert os.path.isabs(path), f"{who}: {path}: a relative path would be under the config's emptyDir"
        assert d in mounts, f"{who}: {path} is in no Secret mounted into the container ({sorted(mounts)})"
        sn, keys = mounts[d]
        assert keys is None or base in keys, f"{who}: {path}: Secret {sn} has no key {base} ({keys})"
        os.makedirs(tmp + d, exist_ok=True)
        fn = tmp + path
        with open(fn, "w") as f:
            f.write(f"dummy-{base}-7c1e9a\n")
        os.chmod(fn, 0o600)
    for d in sorted(mounts, key=len, reverse=True):
        text = text.replace(d + "/", tmp + d + "/")
    return text


def check_dhaf_configs(name, docs, node):
    spec = node["spec"]["template"]["spec"]
    init = container(spec, "config")
    main = container(spec, "dhaf-node")
    vols = {v["name"]: v for v in spec["volumes"]}
    tmpl_mount = [m for m in init["volumeMounts"] if "configMap" in vols[m["name"]]]
    assert len(tmpl_mount) == 1, "the init container mounts one ConfigMap (the template)"
    cm_name = vols[tmpl_mount[0]["name"]]["configMap"]["name"]
    cm = workload(docs, "ConfigMap", cm_name)
    assert list(cm["data"]) == ["node.dhaf"], f"{cm_name}: one key, node.dhaf"
    template = cm["data"]["node.dhaf"]
    cfg = yaml.safe_load(template)
    assert cfg["dhaf"]["node-name"] == "__POD_NAME__", "node-name must be __POD_NAME__"
    # The config's ports are the containers' ports, and the APIs are reachable with a token.
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert cfg["dhaf"]["web-api"]["port"] == ports["rest"], "web-api.port != the rest port"
    assert cfg["dhaf"]["grpc-api"]["port"] == ports["grpc"], "grpc-api.port != the grpc port"
    for api in ("web-api", "grpc-api"):
        assert cfg["dhaf"][api]["host"] in ("0.0.0.0", "::"), f"{api} is not reachable from other pods"
    assert cfg["dhaf"].get("api-token-file", "").startswith("/etc/dhaf/secrets/"), \
        "the API token must come from the Secret"
    hosts = cfg["etcd"]["hosts"]
    hosts = hosts.split(",") if isinstance(hosts, str) else hosts
    if any(d["kind"] == "StatefulSet" and d["metadata"]["name"] == "etcd" for d in docs):
        etcd = workload(docs, "StatefulSet", "etcd")
        want = {f"https://etcd-{i}.{etcd['spec']['serviceName']}:2379"
                for i in range(etcd["spec"]["replicas"])}
        assert set(hosts) == want, f"etcd.hosts {hosts} are not the etcd pods {sorted(want)}"
    # The secrets both containers need are mounted in both (the init container validates).
    m_init, m_main = secret_mounts(docs, spec, init), secret_mounts(docs, spec, main)
    assert m_init == m_main, f"init and node containers mount different Secrets: {m_init} {m_main}"

    script = init["args"][0]
    assert init["command"] == ["/bin/sh", "-c"], init["command"]
    run_mount = [m["mountPath"] for m in main["volumeMounts"] if m["name"] in
                 [x["name"] for x in init["volumeMounts"] if "emptyDir" in vols[x["name"]]]]
    assert run_mount, "the init container writes into an emptyDir the node mounts"
    assert main["args"][-1].startswith(run_mount[0] + "/"), \
        f"the node's --config {main['args'][-1]} is not in {run_mount[0]}"
    with tempfile.TemporaryDirectory(prefix="dhaf-deploy-") as tmp:
        text = fake_secrets(tmp, template, m_init, f"{name} node.dhaf")
        os.makedirs(tmp + tmpl_mount[0]["mountPath"])
        os.makedirs(tmp + run_mount[0])
        tpath = tmp + tmpl_mount[0]["mountPath"] + "/node.dhaf"
        with open(tpath, "w") as f:
            f.write(text)
        local = script
        for p in (tmpl_mount[0]["mountPath"], run_mount[0]):
            local = local.replace(p + "/", tmp + p + "/")
        env = {"PATH": f"{BIN}:/usr/bin:/bin"}
        for i in range(node["spec"]["replicas"]):
            pod = f"{node['metadata']['name']}-{i}"
            r = subprocess.run(["/bin/sh", "-c", local], env=dict(env, POD_NAME=pod),
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0 and r.stdout.strip() == "OK", \
                f"{name}: the init script for {pod}: rc {r.returncode}: {r.stdout}{r.stderr}"
            out = tmp + main["args"][-1]
            with open(out) as f:
                got = yaml.safe_load(f)
            assert got["dhaf"]["node-name"] == pod, got["dhaf"]["node-name"]
            # And the binary itself, as the brief says: --check-config on the result.
            r = subprocess.run([os.path.join(BIN, "dhaf-node"), "--check-config", "--config", out],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, f"{name}: dhaf-node --check-config: {r.stdout}{r.stderr}"
        # A template with a fixed name would give three nodes one name: refused.
        with open(tpath, "w") as f:
            f.write(text.replace("__POD_NAME__", "node-1"))
        r = subprocess.run(["/bin/sh", "-c", local], env=dict(env, POD_NAME="dhaf-node-0"),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "__POD_NAME__" in r.stderr, (r.returncode, r.stderr)

    # The prober: its config passes dhaf-prober --check-config, names every node, and is a
    # prober the nodes know.
    prober = workload(docs, "Deployment", "dhaf-prober")
    pspec = prober["spec"]["template"]["spec"]
    pc = container(pspec, "dhaf-prober")
    pvols = {v["name"]: v for v in pspec["volumes"]}
    cmount = [m for m in pc["volumeMounts"] if "configMap" in pvols[m["name"]]]
    assert len(cmount) == 1, "the prober mounts one ConfigMap"
    pcm = workload(docs, "ConfigMap", pvols[cmount[0]["name"]]["configMap"]["name"])
    if cmount[0].get("subPath"):
        assert cmount[0]["mountPath"] == pc["args"][-1], "the prober's --config is its ConfigMap"
        key = cmount[0]["subPath"]
    else:
        d, key = os.path.split(pc["args"][-1])
        assert d == cmount[0]["mountPath"].rstrip("/"), "the prober's --config is its ConfigMap"
    assert key in pcm["data"], f"the prober's --config {pc['args'][-1]}: no key {key}"
    ptext = pcm["data"][key]
    pcfg = yaml.safe_load(ptext)["prober"]
    known = {p["name"] for p in cfg.get("probers", [])}
    assert pcfg["name"] in known, f"prober {pcfg['name']} is not under probers: ({known})"
    headless = node["spec"]["serviceName"]
    want = [f"{node['metadata']['name']}-{i}.{headless}:{ports['grpc']}"
            for i in range(node["spec"]["replicas"])]
    assert pcfg["nodes"] == want, f"prober.nodes {pcfg['nodes']} != {want}"
    pm = secret_mounts(docs, pspec, pc)
    assert all(keys is None or keys == ["prober-token"] for _sn, keys in pm.values()), \
        f"the prober sees more than its token: {pm}"
    with tempfile.TemporaryDirectory(prefix="dhaf-deploy-") as tmp:
        text = fake_secrets(tmp, ptext, pm, f"{name} prober.dhaf")
        path = os.path.join(tmp, "prober.dhaf")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([os.path.join(BIN, "dhaf-prober"), "--check-config", "--config", path],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "OK" in r.stdout, f"dhaf-prober --check-config: {r.stdout}{r.stderr}"
    return f"{node['spec']['replicas']} node configs + prober OK"


def check_etcd_and_probes(name, docs):
    """etcd's TLS flags and the files they name, its scripts (sh -n, and only etcdctl, etcd
    and shell builtins: the etcd image has nothing else), the prober's liveness probe."""
    prober = container(workload(docs, "Deployment", "dhaf-prober")["spec"]["template"]["spec"],
                       "dhaf-prober")
    cmd = prober["livenessProbe"]["exec"]["command"]
    assert cmd[:2] == ["dhaf-prober", "--healthcheck"] and cmd[2:] == prober["args"][1:], \
        f"{name}: the prober's liveness probe is not its own --healthcheck: {cmd}"
    if not any(d["kind"] == "StatefulSet" and d["metadata"]["name"] == "etcd" for d in docs):
        return "no etcd"
    etcd = workload(docs, "StatefulSet", "etcd")
    spec = etcd["spec"]["template"]["spec"]
    c = container(spec, "etcd")
    flags = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "true") for a in c["args"])
    for f in ("client-cert-auth", "peer-client-cert-auth"):
        assert flags.get(f) == "true", f"{name}: etcd without --{f}"
    for f in ("listen-client-urls", "advertise-client-urls", "listen-peer-urls",
              "initial-advertise-peer-urls"):
        assert flags[f].startswith("https://"), f"{name}: etcd --{f}={flags[f]} is not TLS"
    assert "initial-cluster-state" not in flags and "initial-cluster" not in flags, \
        f"{name}: start.sh chooses --initial-cluster(-state), not the manifest"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    for f in ("cert-file", "key-file", "trusted-ca-file", "peer-cert-file", "peer-key-file",
              "peer-trusted-ca-file"):
        d, base = os.path.split(flags[f])
        v = vols.get(mounts.get(d), {})
        assert v.get("secret", {}).get("secretName") == "etcd-tls", \
            f"{name}: etcd --{f}={flags[f]} is not in the Secret etcd-tls"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["CLUSTER_SIZE"] == str(etcd["spec"]["replicas"]), "CLUSTER_SIZE != replicas"
    assert env["SERVICE_NAME"] == etcd["spec"]["serviceName"], "SERVICE_NAME != serviceName"
    assert c["command"][0] == "/bin/sh", c["command"]
    script_dir, script = os.path.split(c["command"][1])
    cm = workload(docs, "ConfigMap", vols[mounts[script_dir]]["configMap"]["name"])
    assert script in cm["data"], f"{name}: {script} is not in ConfigMap {cm['metadata']['name']}"
    # The jobs run scripts of the same ConfigMap.
    jobs = [d for d in docs if d["kind"] == "CronJob"]
    assert {j["metadata"]["name"] for j in jobs} == {"etcd-backup", "etcd-defrag"}, jobs
    for j in jobs:
        jspec = j["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        for jc in all_containers(jspec):
            if jc["command"][0] == "/bin/sh":
                assert os.path.basename(jc["command"][1]) in cm["data"], jc["command"]
        assert j["spec"]["concurrencyPolicy"] == "Forbid", f"{j['metadata']['name']}: overlapping runs"
    builtins = {"set", "log", "ctl", "printf", "exec", "exit", "continue", "break", "read",
                "local", "shift", "cd", "[", "echo"}
    for key, text in cm["data"].items():
        for sh in ("dash", "bash"):
            if shutil.which(sh):
                r = subprocess.run([sh, "-n"], input=text, capture_output=True, text=True,
                                   timeout=30)
                assert r.returncode == 0, f"{name}: {key}: {sh} -n: {r.stderr}"
        if key != "rotate.sh":  # rotate.sh runs in the dhaf image (coreutils)
            # The words in command position, once quoted text and comments are gone.
            code = text.replace("\\\n", " ")
            code = re.sub(r"'[^']*'", "''", re.sub(r'"(?:[^"\\]|\\.)*"', '""', code))
            code = re.sub(r"(?m)^\s*#.*$", "", re.sub(r"\$\(\([^)]*\)\)", "0", code))
            words = re.findall(r"(?:^|[;|(]|&&|\|\||\bthen|\bdo|\belse|\$\()\s*"
                               r"([a-z][\w.-]*)(?![\w.=-])", code, re.M)
            tools = {w for w in words if w not in builtins}
            tools -= {"if", "fi", "for", "while", "until", "done", "case", "esac", "in", "then",
                      "do", "else", "true", "false"}
            assert tools <= {"etcdctl", "etcd"}, f"{name}: {key} runs {sorted(tools)}, not in the etcd image"
    return f"etcd TLS for clients and peers; {len(cm['data'])} scripts parse"


def k8s_overlay(name):
    def test():
        docs = render(os.path.join(K8S, "overlays", name))
        check_structure(name, docs)
        check_references(name, docs)
        node = check_workloads(name, docs)
        note = check_dhaf_configs(name, docs, node) + "; " + check_etcd_and_probes(name, docs)
        kinds = sorted({d["kind"] for d in docs})
        return f"{len(docs)} objects ({', '.join(kinds)}); {note}"
    return test


def k8s_base():
    docs = render(os.path.join(K8S, "base"))
    check_structure("base", docs)
    # The base alone lacks only the Secret.
    secrets = {v["secret"]["secretName"] for _w, _l, spec in pods(docs)
               for v in spec.get("volumes", []) if "secret" in v}
    assert secrets == {"dhaf-secrets"} | {n for _k, n in ETCD_TLS}, secrets
    EXTERNAL["base"] = {("Secret", "dhaf-secrets")} | ETCD_TLS
    check_references("base", docs)
    node = check_workloads("base", docs)
    note = check_dhaf_configs("base", docs, node)
    return f"{len(docs)} objects; {note}"


def k8s_root():
    """`kubectl kustomize deploy/k8s` renders the example overlay."""
    root, example = by_id(render(K8S)), by_id(render(os.path.join(K8S, "overlays", "example")))
    assert root == example, f"deploy/k8s differs from overlays/example: {set(root) ^ set(example)}"
    return f"{len(root)} objects"


def k8s_same_as_kubectl():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return "skipped: no kubectl here (the minimal renderer was used alone)"
    notes = []
    for d in [".", "base"] + [os.path.join("overlays", o) for o in OVERLAYS]:
        path = os.path.join(K8S, d)
        r = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True, timeout=60)
        if r.returncode != 0 and "unknown command" in r.stderr:
            return "skipped: this kubectl has no kustomize"
        assert r.returncode == 0, f"kubectl kustomize {d}: {r.stderr[-2000:]}"
        theirs = by_id([x for x in yaml.safe_load_all(r.stdout) if x is not None])
        ours = by_id(render(path))
        assert set(theirs) == set(ours), f"{d}: objects differ: {set(theirs) ^ set(ours)}"
        for ident in ours:
            a, b = canonical(ours[ident]), canonical(theirs[ident])
            assert a == b, f"{d}: {ident} differs:\nours   {json.dumps(a, sort_keys=True)[:3000]}\n" \
                           f"kubectl {json.dumps(b, sort_keys=True)[:3000]}"
        notes.append(f"{d}: {len(ours)}")
    return "kubectl kustomize gives the same objects (" + ", ".join(notes) + ")"


# ------------------------------------------------------------------ systemd

UNITS = ("dhaf-node.service", "dhaf-prober.service")
REQUIRED = {"Unit": ["Description", "After", "Wants"],
            "Service": ["ExecStart", "User", "Restart", "RestartSec", "NoNewPrivileges",
                        "ProtectSystem", "ProtectHome", "PrivateTmp", "ReadOnlyPaths",
                        "CapabilityBoundingSet", "TimeoutStopSec"],
            "Install": ["WantedBy"]}


def parse_unit(path):
    sections, cur = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                cur = sections.setdefault(line.strip("[]"), {})
                continue
            k, _, v = line.partition("=")
            assert cur is not None, f"{path}: {line} outside a section"
            cur.setdefault(k.strip(), []).append(v.strip())
    return sections


def check_unit_keys(path):
    u = parse_unit(path)
    for sec, keys in REQUIRED.items():
        for k in keys:
            assert k in u.get(sec, {}), f"{path}: [{sec}] {k} missing"
    s = u["Service"]
    assert s["Restart"] == ["on-failure"] and s["NoNewPrivileges"] == ["yes"], path
    assert s["ProtectSystem"] == ["strict"] and s["User"] == ["dhaf"], path
    assert s["CapabilityBoundingSet"] == [""], f"{path}: capabilities are not all dropped"
    assert s["ReadOnlyPaths"] == ["/etc/dhaf"], path
    exe = s["ExecStart"][0].split()
    assert exe[1:3] == ["--config", "/etc/dhaf/" + ("node" if "node" in path else "prober") + ".dhaf"]
    if "dhaf-node" in path:
        assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"], path
    else:
        assert "ExecReload" not in s, f"{path}: the prober has no reload (SIGHUP would end it)"
    return u


def verify_units(unit_dir, bin_dir):
    """systemd-analyze verify (no output allowed) and security of the units, with the binaries
    taken from bin_dir. Returns a note."""
    sa = shutil.which("systemd-analyze")
    for unit in UNITS:
        check_unit_keys(os.path.join(unit_dir, unit))
    if not sa:
        return "keys parsed (no systemd-analyze here)"
    notes = []
    with tempfile.TemporaryDirectory(prefix="dhaf-units-") as tmp:
        for unit in UNITS:
            with open(os.path.join(unit_dir, unit)) as f:
                text = f.read()
            exes = set(re.findall(r"(/\S+/dhaf-(?:node|prober))\b", text))
            assert exes, f"{unit}: no dhaf binary in it"
            for e in exes:
                text = text.replace(e, os.path.join(bin_dir, os.path.basename(e)))
            path = os.path.join(tmp, unit)
            with open(path, "w") as f:
                f.write(text)
            r = subprocess.run([sa, "verify", path], capture_output=True, text=True, timeout=60)
            out = (r.stdout + r.stderr).strip()
            assert r.returncode == 0 and not out, f"systemd-analyze verify {unit}: {out}"
            r = subprocess.run([sa, "security", "--offline=yes", path], capture_output=True,
                               text=True, timeout=60)
            m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
            if m:
                assert float(m.group(1)) <= 3.0, f"{unit}: exposure {m.group(1)}"
                notes.append(f"{unit} exposure {m.group(1)}")
    return "systemd-analyze verify clean; " + ", ".join(notes)


def systemd_units():
    return verify_units(os.path.join(SRC, "deploy", "systemd"), BIN)


def systemd_examples():
    """The example configs the units read pass --check-config (secret files faked)."""
    with tempfile.TemporaryDirectory(prefix="dhaf-etc-") as tmp:
        for cfg, exe in (("node.dhaf", "dhaf-node"), ("prober.dhaf", "dhaf-prober")):
            with open(os.path.join(SRC, "deploy", "systemd", cfg)) as f:
                text = f.read()
            for p in config_files(text):
                if p.startswith("/etc/dhaf/"):
                    fn = tmp + p
                    os.makedirs(os.path.dirname(fn), exist_ok=True)
                    with open(fn, "w") as f:  # one secret per file: tokens must differ
                        f.write(f"dummy-{abs(hash(p)):016x}\n")
                    os.chmod(fn, 0o640)
            text = text.replace("/etc/dhaf/", tmp + "/etc/dhaf/")
            path = os.path.join(tmp, cfg)
            with open(path, "w") as f:
                f.write(text)
            r = subprocess.run([os.path.join(BIN, exe), "--check-config", "--config", path],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, f"{cfg}: {r.stdout}{r.stderr}"
    return "node.dhaf and prober.dhaf OK"


# ------------------------------------------------------------------ docker

def dockerfile_stages():
    stages = []
    with open(os.path.join(SRC, "deploy", "docker", "Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append({"from": rest.split()[0], "lines": []})
        elif word.upper() == "ARG" and not stages:
            continue  # a global ARG (the FROM lines may use it)
        else:
            assert stages, f"Dockerfile: {line} before FROM"
            stages[-1]["lines"].append((word.upper(), rest.strip()))
    return stages


def docker_file():
    """The Dockerfile's shape. It is built and run for real by tests/deploy/test_container.py
    (podman), and the packages it installs are checked by tests/deploy/test_deb.py."""
    stages = dockerfile_stages()
    assert len(stages) >= 2, "the Dockerfile is not multi-stage"
    assert stages[0]["from"] == "debian:12", stages[0]["from"]
    final = stages[-1]
    assert final["from"] == "debian:12-slim", final["from"]
    build_runs = " ".join(r for w, r in stages[0]["lines"] if w == "RUN")
    assert "scripts/install-deps.sh --build" in build_runs, \
        "the builder does not use scripts/install-deps.sh --build"
    assert "cpack -G DEB" in build_runs, "the builder does not make the .deb packages"
    assert os.path.isfile(os.path.join(SRC, "scripts", "install-deps.sh"))
    runs = " ".join(r for w, r in final["lines"] if w == "RUN")
    m = re.search(r"apt-get install (.*?)(?:&&|$)", runs)
    assert m, "the final stage installs no packages"
    pkgs = {p for p in m.group(1).split() if not p.startswith("-")}
    assert not {p for p in pkgs if p.endswith("-dev")}, f"-dev packages in the final image: {pkgs}"
    for deb in ("dhaf-common", "dhaf-node", "dhaf-prober", "dhafctl"):
        assert any(p.startswith(f"/tmp/debs/{deb}_") for p in pkgs), f"{deb} is not installed"
    users = [r for w, r in final["lines"] if w == "USER"]
    assert users and users[-1] == "10001:10001", f"USER {users} (the uid/gid contract: 10001)"
    assert any(w == "HEALTHCHECK" for w, _ in final["lines"]), "no HEALTHCHECK"
    ep = [r for w, r in final["lines"] if w == "ENTRYPOINT"]
    cmd = [r for w, r in final["lines"] if w == "CMD"]
    assert ep and cmd and "dhaf-node" in json.loads(cmd[-1]) + json.loads(ep[-1]), (ep, cmd)
    ign = os.path.join(SRC, "deploy", "docker", "Dockerfile.dockerignore")
    with open(ign) as f:
        ignored = set(f.read().split())
    assert {".git", "build", "build-*"} <= ignored, ignored
    return "stages, packages, user 10001:10001, HEALTHCHECK (built and run by deploy_container)"


# ------------------------------------------------------------------ make install

def make_install():
    build = os.path.dirname(BIN)
    with tempfile.TemporaryDirectory(prefix="dhaf-install-") as dest:
        r = subprocess.run(["make", "-C", SRC, "install", f"BUILD={build}", f"DESTDIR={dest}",
                            "PREFIX=/usr"], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"make install: {r.stdout[-3000:]}{r.stderr[-3000:]}"
        root = os.path.join(dest, "usr")
        docs = sorted(f for f in os.listdir(os.path.join(SRC, "docs")) if f.endswith(".md"))
        examples = ["config-n1.dhaf", "full.dhaf", "node.dhaf", "prober.dhaf"]
        want = (["bin/dhaf-node", "bin/dhaf-prober", "bin/dhafctl", "bin/dhaf-sim",
                 "lib/systemd/system/dhaf-node.service", "lib/systemd/system/dhaf-prober.service",
                 "lib/sysusers.d/dhaf.conf", "share/bash-completion/completions/dhafctl",
                 "share/doc/dhaf/README.md"]
                + [f"share/doc/dhaf/{'index.md' if d == 'README.md' else d}" for d in docs]
                + [f"share/doc/dhaf/examples/{e}" for e in examples])
        for w in want:
            assert os.path.isfile(os.path.join(root, w)), f"make install did not install {w}"
        with open(os.path.join(SRC, "README.md"), "rb") as a, \
                open(os.path.join(root, "share/doc/dhaf/README.md"), "rb") as b:
            assert a.read() == b.read(), "the installed README.md is not the project's README"
        assert "deploy.md" in docs, "docs/deploy.md is missing"
        for exe in ("dhaf-node", "dhaf-prober", "dhafctl", "dhaf-sim"):
            p = os.path.join(root, "bin", exe)
            assert os.stat(p).st_mode & stat.S_IXOTH, f"{exe} is not executable"
            r = subprocess.run([p, "--version"], capture_output=True, text=True, timeout=30)
            assert r.returncode == 0 and exe in r.stdout, (exe, r.stdout, r.stderr)
        # Nothing outside the prefix (DESTDIR honoured), nothing into /etc.
        assert os.listdir(dest) == ["usr"], os.listdir(dest)
        unit_dir = os.path.join(root, "lib", "systemd", "system")
        for unit in UNITS:
            with open(os.path.join(unit_dir, unit)) as f:
                text = f.read()
            assert f"ExecStart=/usr/bin/{unit.split('.')[0]} " in text, f"{unit}: ExecStart"
        with open(os.path.join(root, "lib", "sysusers.d", "dhaf.conf")) as f:
            assert re.search(r"^u dhaf ", f.read(), re.M), "sysusers.d: no dhaf user"
        note = verify_units(unit_dir, os.path.join(root, "bin"))
        n = sum(len(fs) for _d, _s, fs in os.walk(dest))
    return f"{n} files; installed units: {note}"


def main():
    tests = [("k8s base renders", k8s_base)]
    tests += [(f"k8s overlay {o}", k8s_overlay(o)) for o in OVERLAYS]
    tests += [("k8s root = overlays/example", k8s_root),
              ("k8s renderer = kubectl kustomize", k8s_same_as_kubectl),
              ("systemd units", systemd_units),
              ("systemd example configs", systemd_examples),
              ("Dockerfile", docker_file),
              ("make install", make_install)]
    assert "example" in OVERLAYS, OVERLAYS
    return run_tests(tests)


if __name__ == "__main__":
    sys.exit(main())
