# SPDX-License-Identifier: MIT
"""The Kubernetes manifests run with `podman kube play` (issue 18 item 2).

Renders deploy/k8s (the example overlay; `kubectl kustomize` where installed, else
tests/system/test_deploy.py's renderer), makes the etcd certificates with deploy/k8s/etcd-certs.sh,
and changes the objects only as far as podman 4.3 on one host needs (every change is printed
with its reason): StatefulSets become Pods named as Kubernetes names them (etcd-0, dhaf-node-1,
...), Secrets become ConfigMaps, one loopback address per pod on the host network with the
Services' DNS names in a hosts file, PVC templates become emptyDirs, the example's service
becomes test backends and the Cloudflare fake (tests/system/dhafsys.py). The images carry the
manifests' names: ours built from the tree (podlab.build_dhaf_image), etcd a stand-in
from Debian's etcd-server 3.4 (no registry here), both with curl added because podman runs an
httpGet liveness probe as curl inside the container.

Then it asserts: every pod's containers run and its init containers exited 0; every liveness
probe passes as podman's healthcheck (`podman healthcheck run`), and every readiness and startup
probe passes when the test runs it as the kubelet would (podman ignores them): an HTTP GET from
outside to the pod's address, an exec inside; etcd refuses a client without a certificate;
one leader in etcd (etcdctl in the etcd pods, over TLS with client certificates); the
prober's vote; a failover when the entry point in use stops; a member whose volume is gone
(etcd-1's pod replayed with an empty data dir) is removed and added again by start.sh and the
cluster has 3 healthy members; the backup job writes a snapshot and keeps the newest KEEP (two
older files put there first); the defrag job defragments every member, the leader last; with
all of etcd stopped a node's readiness probe (/healthz) still passes while /readyz says 503
(dhaf-api keeps its endpoints). `podman kube down`, pod and volume removal on every exit path
(end, error, SIGINT, SIGTERM).

The etcd stand-in is 3.4, which has /health but not /livez and /readyz (3.5.11+): its probes'
paths are mapped to /health for the run, and the probes as written are checked by
test_deploy.py only.

Exit 77 (skip) without podman, buildah, runc, debootstrap or root (podlab).

usage: /usr/bin/python3 test_kube.py SOURCE_DIR BUILD_DIR"""
import atexit
import base64
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "system"))
import podlab  # noqa: E402
from dhafsys import Backend, CloudflareFake  # noqa: E402

SRC = os.path.abspath(sys.argv[1])
BUILD = os.path.abspath(sys.argv[2])
DHAF_IMAGE = "registry.example.com/dhaf:0.1.0"     # overlays/example's images:
ETCD_IMAGE = "registry.k8s.io/etcd:3.5.16-0"       # base/etcd.yaml
BUILT_DHAF = "localhost/dhaf:kubetest"
ETCD_STANDIN = "localhost/dhaf-etcd-standin:3.4"
NS = "dhaf"
CLUSTER = "shop"                                   # overlays/example's cluster-name
NET = f"127.77.{os.getpid() % 200 + 20}."
EPS = {"dc-1": NET + "51", "dc-2": NET + "52", "dc-3": NET + "53"}
INIT_ALWAYS = {"io.podman.annotations.init.container.type": "always"}
VOLP = f"kt{os.getpid()}-"  # podman volume names of this run

changes = []


def change(what, why):
    if (what, why) not in changes:
        changes.append((what, why))


def commit():
    r = subprocess.run(["git", "-C", SRC, "rev-parse", "--short", "HEAD"], capture_output=True,
                       text=True)
    return r.stdout.strip() or "unknown"


# ------------------------------------------------------------------ images

def with_curl(lab, base, tag, user, extra=""):
    """base + curl, tagged tag (podman runs httpGet probes as curl in the container)."""
    ctx = os.path.join(lab.tmp, "curl-" + tag.replace("/", "_").replace(":", "_"))
    os.makedirs(ctx, exist_ok=True)
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(f"FROM {base}\nUSER 0:0\n"
                "RUN apt-get update && apt-get install -y --no-install-recommends curl "
                f"&& rm -rf /var/lib/apt/lists/* {extra}\n"
                + (f"USER {user}\n" if user else ""))
    return lab.buildah_bud(ctx, os.path.join(ctx, "Dockerfile"), tag)


def images(lab):
    print(f"base image: {lab.ensure_base()}", flush=True)
    secs, how = lab.build_dhaf_image(SRC, BUILD, BUILT_DHAF, commit())
    print(f"dhaf image built in {secs:.0f} s ({how})", flush=True)
    print(f"+ curl as {DHAF_IMAGE}: {with_curl(lab, BUILT_DHAF, DHAF_IMAGE, '10001:10001'):.0f} s",
          flush=True)
    print(f"etcd stand-in (Debian's etcd-server 3.4): {lab.build_etcd_image(ETCD_STANDIN)}",
          flush=True)
    # Debian's package leaves /var/lib/etcd (0700 etcd:etcd), which podman would copy into
    # the data volume; the upstream image has none.
    secs = with_curl(lab, ETCD_STANDIN, ETCD_IMAGE, None, "&& rm -rf /var/lib/etcd")
    print(f"+ curl as {ETCD_IMAGE}: {secs:.0f} s", flush=True)
    change(f"images: ours as {DHAF_IMAGE}, Debian's etcd 3.4 as {ETCD_IMAGE}, both + curl",
           "no registry here; podman runs httpGet liveness probes as curl inside the container")


# ------------------------------------------------------------------ rendering

def render():
    k8s = os.path.join(SRC, "deploy", "k8s")
    if shutil.which("kubectl"):
        r = subprocess.run(["kubectl", "kustomize", k8s], capture_output=True, text=True,
                           timeout=120)
        if r.returncode == 0:
            return [d for d in yaml.safe_load_all(r.stdout) if d], "kubectl kustomize deploy/k8s"
        assert "unknown command" in r.stderr, f"kubectl kustomize deploy/k8s: {r.stderr[-2000:]}"
    argv = sys.argv
    sys.argv = [argv[0], SRC, os.path.join(BUILD, "bin")]
    try:
        import test_deploy  # its renderer (the module reads sys.argv)
    finally:
        sys.argv = argv
    return test_deploy.render(os.path.join(k8s, "overlays", "example")), "test_deploy's renderer"


def certs(tmp):
    r = subprocess.run([os.path.join(SRC, "deploy", "k8s", "etcd-certs.sh"), "-n", NS, "-d",
                        os.path.join(tmp, "pki")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"etcd-certs.sh: {r.returncode}: {r.stderr}"
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    names = sorted(d["metadata"]["name"] for d in docs)
    assert names == ["dhaf-etcd-client", "etcd-maintenance-client", "etcd-tls"], names
    return docs


def secret_as_configmap(s):
    data = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
    data.update(s.get("stringData") or {})
    change("Secrets -> ConfigMaps of the same name and keys",
           "podman 4.3's kube play panics on secret volumes (nil secrets manager)")
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": s["metadata"]["name"]}, "data": data}


def test_node_config(text, ip, cf, web_port):
    """The example's node.dhaf for one pod: its listeners on its address, the test's service."""
    cfg = yaml.safe_load(text)
    for api in ("web-api", "grpc-api"):
        cfg["dhaf"][api]["host"] = ip
    cfg["dhaf"]["tact-interval"] = 1
    cfg["services"] = [{
        "name": "shop", "domain": "site.test",
        "entry-points": [{"name": n, "ip": a} for n, a in EPS.items()],
        "switcher": {"type": "cloudflare",
                     "api-token-file": "/etc/dhaf/secrets/cloudflare-api-token",
                     "zone": "site.test", "api-url": f"http://127.0.0.1:{cf.port}/client/v4"},
        "health-checker": {"type": "web", "schema": "http", "port": web_port, "path": "/ok",
                           "timeout": 1, "retries": 0}}]
    change("dhaf-node-config: a copy per pod with web-api/grpc-api.host = the pod's address",
           "0.0.0.0 would make the three nodes collide on one host network")
    change("node.dhaf services: the example's shop on test backends + the Cloudflare fake; "
           "tact-interval 1", "the example's entry points are documentation addresses")
    return yaml.safe_dump(cfg, sort_keys=False)


class Transformer:
    """Kubernetes objects -> what podman 4.3 plays on one host."""

    def __init__(self, tmp, docs, cf, web_port, tls):
        self.tmp = tmp
        self.objs = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        self.cf, self.web_port = cf, web_port
        self.addr = {}
        self.configmaps = {}
        for (kind, name), d in self.objs.items():
            if kind == "ConfigMap":
                self.configmaps[name] = {"apiVersion": "v1", "kind": "ConfigMap",
                                         "metadata": {"name": name}, "data": dict(d["data"])}
            elif kind == "Secret":
                self.configmaps[name] = secret_as_configmap(self.test_secret(d))
        for s in tls:
            self.configmaps[s["metadata"]["name"]] = secret_as_configmap(s)
        etcd = self.objs[("StatefulSet", "etcd")]
        node = self.objs[("StatefulSet", "dhaf-node")]
        lines = ["127.0.0.1 localhost"]
        for sts, first in ((etcd, 10), (node, 20)):
            svc = sts["spec"]["serviceName"]
            for i in range(sts["spec"]["replicas"]):
                pod = f"{sts['metadata']['name']}-{i}"
                self.addr[pod] = NET + str(first + i)
                lines.append(f"{self.addr[pod]} {pod}.{svc} {pod}.{svc}.{NS} {pod}.{svc}.{NS}.svc "
                             f"{pod}.{svc}.{NS}.svc.cluster.local")
        self.addr["dhaf-prober"] = NET + "30"
        self.hosts = os.path.join(tmp, "hosts")
        with open(self.hosts, "w") as f:
            f.write("\n".join(lines) + "\n")
        change("each pod: hostNetwork with its own address in " + NET + "0/24; the Services' "
               "DNS names (etcd-0.etcd, dhaf-node-0.dhaf-node) in a hosts file mounted at "
               "/etc/hosts (kube play --no-hosts)",
               "no pod network or cluster DNS; podman 4.3 ignores hostAliases")

    def test_secret(self, s):
        if s["metadata"]["name"] != "dhaf-secrets":
            return s
        change("Secret dhaf-secrets: test values", "the example's are REPLACE-ME placeholders, "
               "which dhaf refuses")
        return {"metadata": s["metadata"], "stringData": {
            "api-token": "kubetest-api-token-5f0c2e8a91d4",
            "prober-token": "kubetest-prober-token-77a1c3e90b",
            "cloudflare-api-token": CloudflareFake.TOKEN}}

    def pod(self, name, template, ip, restart="OnFailure", env=None):
        spec = copy.deepcopy(template["spec"])
        labels = dict(template["metadata"].get("labels", {}))
        spec["hostNetwork"] = True
        spec["restartPolicy"] = restart
        change("restartPolicy OnFailure (Never for the defrag job), init containers of type "
               "'always'", "podman 4.3 restarts finished init containers under Always "
               "(podman#16343) and races removing 'once' ones (podman#18477)")
        for v in spec.get("volumes", []):
            if "secret" in v:
                sec = v.pop("secret")
                v["configMap"] = {"name": sec["secretName"],
                                  **{k: sec[k] for k in ("items", "defaultMode") if k in sec}}
        # podman makes a named volume of each emptyDir (by the volume's name) and ConfigMap
        # (by the ConfigMap's name): names of this run and pod, or pods would share them.
        renamed = {}
        for v in spec.get("volumes", []):
            if "configMap" in v:
                v["configMap"]["name"] = VOLP + v["configMap"]["name"]
            renamed[v["name"]] = f"{VOLP}{name}-{v['name']}"
            v["name"] = renamed[v["name"]]
        change("volumes renamed <run>-<pod>-<volume>, ConfigMaps <run>-<name>",
               "podman 4.3 makes named volumes of emptyDirs and ConfigMaps, shared by every "
               "pod (and run) using the name")
        spec.setdefault("volumes", []).append(
            {"name": "kubetest-hosts", "hostPath": {"path": self.hosts, "type": "File"}})
        for c in spec.get("initContainers", []) + spec["containers"]:
            for m in c.get("volumeMounts", []):
                m["name"] = renamed[m["name"]]
                # podman 4.3 mounts the whole volume, a directory, where a subPath is asked
                assert not m.get("subPath"), f"{name}/{c['name']}: subPath {m['subPath']}"
            self.container(c, ip, env or {}, name)
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": labels, "annotations": dict(INIT_ALWAYS)},
                "spec": spec}

    def container(self, c, ip, env, pod_name):
        ports = {p.get("name"): p["containerPort"] for p in c.pop("ports", [])}
        if ports:
            change("containers' ports: dropped (named probe ports resolved first)",
                   "podman publishes them, which the host network refuses")
        for e in c.get("env", []):
            fr = e.get("valueFrom", {}).get("fieldRef", {})
            if fr.get("fieldPath") == "status.podIP":
                e.pop("valueFrom")
                e["value"] = ip
                change("env POD_IP (status.podIP): the pod's address", "podman has no pod IP")
            if fr.get("fieldPath") == "metadata.name":
                e.pop("valueFrom")
                e["value"] = pod_name
            if e["name"] in env:
                e.pop("valueFrom", None)
                e["value"] = env[e["name"]]
        values = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
        for k in ("command", "args"):
            for i, a in enumerate(c.get(k, [])):
                x = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                           lambda m: values.get(m.group(1), m.group(0)), a)
                if x != a:
                    c[k][i] = x
                    change("$(VAR) in command and args expanded from the env, as the kubelet "
                           "does; env from metadata.name as a value", "podman 4.3 does neither "
                           "for args")
        for k in ("livenessProbe", "readinessProbe", "startupProbe"):
            p = c.get(k)
            if p and "httpGet" in p:
                h = p["httpGet"]
                h["port"] = ports.get(h["port"], h["port"])
                h["host"] = ip
                change("httpGet probes: host = the pod's address, port by number",
                       "podman's curl would ask localhost; the listeners are on the pod's address")
                if c["image"] == ETCD_IMAGE and h["path"] in ("/livez", "/readyz"):
                    h["path"] = "/health"
                    change("etcd probes /livez and /readyz -> /health",
                           "the stand-in is etcd 3.4 (both since 3.5.11)")
        c.setdefault("volumeMounts", []).append(
            {"name": "kubetest-hosts", "mountPath": "/etc/hosts", "readOnly": True})

    def write(self, name, pod):
        """A file with the pod and the ConfigMaps it names."""
        docs = []
        for v in pod["spec"].get("volumes", []):
            if "configMap" in v:
                cm = copy.deepcopy(self.configmaps[v["configMap"]["name"][len(VOLP):]])
                cm["metadata"]["name"] = VOLP + cm["metadata"]["name"]
                docs.append(cm)
        docs.append(pod)
        path = os.path.join(self.tmp, f"{name}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump_all(docs, f, sort_keys=False)
        return path

    def statefulset(self, name):
        sts = self.objs[("StatefulSet", name)]
        out = {}
        for i in range(sts["spec"]["replicas"]):
            pod_name = f"{name}-{i}"
            t = copy.deepcopy(sts["spec"]["template"])
            for ct in sts["spec"].get("volumeClaimTemplates", []):
                t["spec"].setdefault("volumes", []).append(
                    {"name": ct["metadata"]["name"], "emptyDir": {}})
                change(f"StatefulSet {name}: volumeClaimTemplates -> emptyDir",
                       "a replayed pod then starts with no data, as after a lost volume")
            if name == "dhaf-node":
                cm = f"dhaf-node-config-{i}"
                src = self.configmaps["dhaf-node-config"]
                self.configmaps[cm] = {"apiVersion": "v1", "kind": "ConfigMap",
                                       "metadata": {"name": cm}, "data": {"node.dhaf": test_node_config(
                                           src["data"]["node.dhaf"], self.addr[pod_name], self.cf,
                                           self.web_port)}}
                for v in t["spec"]["volumes"]:
                    if v.get("configMap", {}).get("name") == "dhaf-node-config":
                        v["configMap"]["name"] = cm
            out[pod_name] = self.write(pod_name, self.pod(pod_name, t, self.addr[pod_name]))
        change(f"StatefulSet {name} -> Pods {name}-0..{sts['spec']['replicas'] - 1}",
               "podman 4.3 plays Pods and Deployments only")
        return out

    def deployment(self, name, pod_name):
        d = self.objs[("Deployment", name)]
        change(f"Deployment {name} -> Pod {pod_name}", "one file per pod, replayed one by one")
        return self.write(pod_name, self.pod(pod_name, d["spec"]["template"], self.addr[name]))

    def cronjob(self, name, pod_name, claim_prefix, env=None):
        cj = self.objs[("CronJob", name)]
        t = copy.deepcopy(cj["spec"]["jobTemplate"]["spec"]["template"])
        for v in t["spec"]["volumes"]:
            if "persistentVolumeClaim" in v:
                v["persistentVolumeClaim"]["claimName"] = claim_prefix + v[
                    "persistentVolumeClaim"]["claimName"]
        change("CronJobs -> one Pod run now (kubectl create job --from=cronjob/...); the PVC "
               "-> a podman volume " + claim_prefix + "..., chowned to the fsGroup",
               "podman has no CronJobs and applies no fsGroup to named volumes")
        pod = self.pod(pod_name, t, NET + "40", restart=t["spec"]["restartPolicy"], env=env)
        return self.write(pod_name, pod)


# ------------------------------------------------------------------ the checks

def http_status(url, timeout=3):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


class Run:
    def __init__(self, lab):
        self.lab = lab
        self.files = {}     # pod name -> its YAML file
        atexit.register(self.cleanup)  # before the lab's own (atexit runs in reverse)
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self.on_signal)

    def podman(self, *args, **kw):
        return self.lab.podman(*args, **kw)

    def play(self, name, path):
        self.files[name] = path
        self.podman("kube", "play", "--no-hosts", "--replace", path, timeout=300)

    def down(self, name):
        self.podman("kube", "down", self.files[name], check=False, timeout=120)
        self.podman("pod", "rm", "-f", "-t", "2", name, check=False, timeout=120)
        r = self.podman("volume", "ls", "--format", "{{.Name}}", check=False)
        for v in r.stdout.split():
            if v.startswith(f"{VOLP}{name}-"):
                self.podman("volume", "rm", "-f", v, check=False)

    def cleanup(self):
        for name in list(self.files):
            self.down(name)
        self.files = {}
        r = self.podman("volume", "ls", "--format", "{{.Name}}", check=False)
        for v in r.stdout.split():
            if v.startswith(VOLP):
                self.podman("volume", "rm", "-f", v, check=False)

    def on_signal(self, signum, frame):
        self.cleanup()  # while the lab's containers.conf still exists
        self.lab._on_signal(signum, frame)

    def containers(self, pod):
        """[(name, state, exit code)] of a pod's containers (not its infra container)."""
        r = self.podman("ps", "-a", "--filter", f"pod={pod}", "--format", "json", check=False)
        if r.returncode != 0:
            return []
        return [(c["Names"][0], c["State"], c.get("ExitCode", 0)) for c in json.loads(r.stdout)
                if not c.get("IsInfra") and not c["Names"][0].endswith("-infra")]

    def exec(self, container, *cmd, timeout=60):
        return self.podman("exec", container, *cmd, check=False, timeout=timeout)

    def etcdctl(self, *args, pod="etcd-0"):
        r = self.exec(f"{pod}-etcd", "etcdctl", f"--endpoints=https://{pod}.etcd:2379",
                      "--dial-timeout=3s", "--command-timeout=10s", *args)
        assert r.returncode == 0, f"etcdctl {' '.join(args)} in {pod}: {r.stdout}{r.stderr}"
        return r.stdout


def pods_running(run, pods, specs):
    """Every app container runs and every init container exited 0."""
    def ok():
        for p in pods:
            spec = specs[p]
            inits = {f"{p}-{c['name']}" for c in spec.get("initContainers", [])}
            apps = {f"{p}-{c['name']}" for c in spec["containers"]}
            got = {n: (s, code) for n, s, code in run.containers(p)}
            for n in inits:
                if got.get(n) != ("exited", 0):
                    return None
            for n in apps:
                if got.get(n, ("",))[0] != "running":
                    return None
        return True
    return ok


def probe(run, pod, c, p):
    """Runs one probe the way the kubelet does; True when it passes."""
    if "httpGet" in p:
        h = p["httpGet"]
        st = http_status(f"http://{h['host']}:{h['port']}{h['path']}")
        return st is not None and 200 <= st < 400
    if "exec" in p:
        return run.exec(f"{pod}-{c['name']}", *p["exec"]["command"]).returncode == 0
    raise AssertionError(f"{pod}/{c['name']}: a probe this test cannot run: {p}")


def check_probes(run, pods, specs, timeout=90):
    notes = []
    for pod in pods:
        for c in specs[pod]["containers"]:
            name = f"{pod}-{c['name']}"
            if c.get("livenessProbe"):
                ok, said = podlab.wait_until(f"{name}: podman healthcheck run", lambda: (
                    lambda h: h if h[0] else None)(run.lab.healthcheck(name)), timeout, 1)
                notes.append(f"{name} liveness (podman healthcheck) ok")
            for k in ("readinessProbe", "startupProbe"):
                if c.get(k):
                    podlab.wait_until(f"{name}: {k}", lambda: probe(run, pod, c, c[k]), timeout, 0.5)
                    notes.append(f"{name} {k} ok")
    return notes


def member_list(run, pod="etcd-0"):
    out = run.etcdctl("member", "list", "-w", "json", pod=pod)
    return json.loads(out)["members"]


def main():
    lab = podlab.Lab(prefix="dhaf-kt")
    t_all = time.monotonic()
    images(lab)
    run = Run(lab)
    docs, how = render()
    print(f"rendered {len(docs)} objects with {how}", flush=True)
    tls = certs(lab.tmp)
    cf = CloudflareFake(EPS, start_ep="dc-1")
    backends = {}
    web_port = None
    try:
        for ep, ip in EPS.items():
            backends[ep] = Backend(ip, web_port or 0).start()
            web_port = backends[ep].port
        tr = Transformer(lab.tmp, docs, cf, web_port, tls)
        files = {}
        files.update(tr.statefulset("etcd"))
        files.update(tr.statefulset("dhaf-node"))
        files["dhaf-prober-kubetest"] = tr.deployment("dhaf-prober", "dhaf-prober-kubetest")
        specs = {}
        for name, path in files.items():
            with open(path) as f:
                specs[name] = [d for d in yaml.safe_load_all(f) if d["kind"] == "Pod"][0]["spec"]
        print("what was changed for podman, and why:")
        for what, why in changes:
            print(f"  - {what}: {why}")
        print("not played (no podman equivalent, checked by test_deploy.py): "
              + ", ".join(sorted({f"{k} {n}" for k, n in tr.objs if k in (
                  "Service", "PodDisruptionBudget", "NetworkPolicy")})), flush=True)

        t0 = time.monotonic()
        for name, path in files.items():
            run.play(name, path)
        print(f"played {len(files)} pods in {time.monotonic() - t0:.0f} s", flush=True)
        pods = list(files)
        podlab.wait_until("every container running, every init container exited 0",
                          pods_running(run, pods, specs), 180, 1)
        for p in pods:
            print(f"  {p}: " + ", ".join(f"{n} {s}" + (f" ({code})" if s == "exited" else "")
                                          for n, s, code in run.containers(p)))
        for n in check_probes(run, pods, specs):
            print(f"  {n}")

        # ---- etcd over TLS with client certificates, one leader, the prober's vote
        members = member_list(run)
        assert len(members) == 3 and all(m.get("name") for m in members), members
        r = lab.podman("exec", "etcd-0-etcd", "env", "-u", "ETCDCTL_CERT", "-u", "ETCDCTL_KEY",
                       "etcdctl", "--endpoints=https://etcd-0.etcd:2379", "--dial-timeout=3s",
                       "--command-timeout=5s", "get", "/x", check=False)
        assert r.returncode != 0, f"etcd answered a client without a certificate: {r.stdout}"
        print(f"etcd: 3 members over TLS; a client without a certificate is refused "
              f"({(r.stderr.strip().splitlines() or ['?'])[-1][:100]})")
        prefix = f"/dhaf/{CLUSTER}/"

        def get(key):
            out = run.etcdctl("get", prefix + key, "--print-value-only")
            return json.loads(out) if out.strip() else None
        leader = podlab.wait_until("a leader", lambda: (get("leader") or {}).get("node"), 60, 0.5)
        print(f"leader: {leader}")
        podlab.wait_until("the prober's vote", lambda: get("votes/probe-1"), 60, 0.5)
        print("the prober votes (votes/probe-1)")
        state = lambda: get("services/shop/state") or {}  # noqa: E731
        podlab.wait_until("shop on dc-1", lambda: state().get("current") == "dc-1", 60, 0.5)

        # ---- a failover
        backends["dc-1"].stop()
        t0 = time.monotonic()
        podlab.wait_until("a failover to dc-2", lambda: state().get("current") == "dc-2"
                          and cf.points_to() == "dc-2", 60, 0.2)
        print(f"failover dc-1 -> dc-2 {time.monotonic() - t0:.1f} s after dc-1 stopped "
              "(the Cloudflare fake's record points to dc-2)")

        # ---- a member whose volume is gone: removed and added again
        old = {m["name"]: m["ID"] for m in members}
        run.down("etcd-1")
        run.play("etcd-1", files["etcd-1"])
        podlab.wait_until("etcd-1 running again", pods_running(run, ["etcd-1"], specs), 120, 1)
        log = lab.logs("etcd-1-etcd")
        assert "lost its data: removing it and adding it again" in log, log[-3000:]

        def rejoined():
            ms = member_list(run)
            m1 = [m for m in ms if m.get("name") == "etcd-1"]
            return len(ms) == 3 and m1 and m1[0]["ID"] != old["etcd-1"] and ms
        ms = podlab.wait_until("etcd-1 back as a new member", rejoined, 120, 1)
        r = run.exec("etcd-0-etcd", "etcdctl", "--endpoints=https://etcd-0.etcd:2379",
                     "--dial-timeout=3s", "--command-timeout=10s", "endpoint", "health",
                     "--cluster")
        health = r.stdout + r.stderr  # etcdctl 3.4 prints the results on stderr
        assert r.returncode == 0 and health.count("is healthy") == 3, health
        check_probes(run, ["etcd-1"], specs)
        print(f"etcd-1 replayed with no data: start.sh removed member {old['etcd-1']:x} and "
              f"added {[m['ID'] for m in ms if m['name'] == 'etcd-1'][0]:x}; 3 healthy members")
        for line in log.splitlines():
            if line.startswith("etcd-start:"):
                print(f"  {line[:160]}")

        # ---- the backup job (KEEP=2, two older snapshots there); the defrag job
        vol = f"{VOLP}etcd-backup"
        lab.podman("volume", "create", vol)
        mp = json.loads(lab.podman("volume", "inspect", vol).stdout)[0]["Mountpoint"]
        old_snaps = ["etcd-20200101T000000Z.db", "etcd-20200102T000000Z.db"]
        for f in old_snaps:
            with open(os.path.join(mp, f), "w") as fh:
                fh.write("an older snapshot\n")
        for f in [mp] + [os.path.join(mp, f) for f in old_snaps]:
            os.chown(f, 65532, 65532)
        backup = tr.cronjob("etcd-backup", "etcd-backup-kubetest", VOLP, env={"KEEP": "2"})
        run.play("etcd-backup-kubetest", backup)
        podlab.wait_until("the backup job done", lambda: any(
            n.endswith("-rotate") and s == "exited" for n, s, _c in
            run.containers("etcd-backup-kubetest")), 120, 1)
        got = {n: (s, c) for n, s, c in run.containers("etcd-backup-kubetest")}
        said = lab.logs("etcd-backup-kubetest-snapshot") + lab.logs("etcd-backup-kubetest-rotate")
        assert all(v == ("exited", 0) for v in got.values()), (got, said)
        run.down("etcd-backup-kubetest")
        snaps = sorted(f for f in os.listdir(mp) if f.startswith("etcd-") and f.endswith(".db"))
        new = [f for f in snaps if f not in old_snaps]
        assert len(snaps) == 2 and snaps[0] == old_snaps[1] and len(new) == 1, (snaps, said)
        size = os.path.getsize(os.path.join(mp, new[0]))
        assert size > 1000, f"{new[0]}: {size} bytes"
        print(f"backup job (KEEP=2): {new[0]} ({size} bytes) saved, {old_snaps[0]} removed, "
              f"{old_snaps[1]} kept")

        defrag = tr.cronjob("etcd-defrag", "etcd-defrag-kubetest", VOLP)
        status = run.etcdctl("endpoint", "status", "--cluster", "-w", "json")
        lead_id = json.loads(status)[0]["Status"]["leader"]
        lead_ep = [s["Endpoint"] for s in json.loads(status)
                   if s["Status"]["header"]["member_id"] == lead_id][0]
        run.play("etcd-defrag-kubetest", defrag)
        podlab.wait_until("the defrag job done", lambda: any(
            s == "exited" for _n, s, _c in run.containers("etcd-defrag-kubetest")), 180, 1)
        got = run.containers("etcd-defrag-kubetest")
        said = lab.logs("etcd-defrag-kubetest-defrag")
        assert all(s == "exited" and c == 0 for _n, s, c in got), (got, said)
        order = [ln.split(": ", 1)[1] for ln in said.splitlines()
                 if ln.startswith("etcd-defrag: https://")]
        assert len(order) == 3 and order[-1] == lead_ep, (order, lead_ep, said)
        print(f"defrag job: {' -> '.join(order)} (the leader {lead_ep} last)")
        run.down("etcd-defrag-kubetest")

        # ---- all of etcd stopped: the nodes stay ready for API traffic, /readyz says why not
        for i in range(3):
            run.down(f"etcd-{i}")
        n0 = tr.addr["dhaf-node-0"]
        podlab.wait_until("dhaf-node-0 /readyz 503", lambda: http_status(
            f"http://{n0}:8128/readyz") == 503, 90, 0.5)
        c = specs["dhaf-node-0"]["containers"][0]
        assert probe(run, "dhaf-node-0", c, c["readinessProbe"]), "readiness fails without etcd"
        ok, said = lab.healthcheck("dhaf-node-0-dhaf-node")
        assert ok, f"liveness fails without etcd: {said}"
        print("etcd stopped: dhaf-node-0 /readyz 503, its readiness probe (/healthz) and "
              "liveness pass: dhaf-api keeps its endpoints")
    except BaseException:
        for p in list(run.files):
            for n, s, code in run.containers(p):
                print(f"---- {n} ({s}, {code})\n{lab.logs(n)[-3000:]}")
        raise
    finally:
        run.cleanup()
        for b in backends.values():
            b.stop()
        cf.stop()
        lab.close()
    print(f"PASS in {time.monotonic() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
