# SPDX-License-Identifier: MIT
"""Containers for the deployment tests (tests/deploy/), with Debian's podman, buildah and runc
as shared/reference/containers-here.md describes them: no registry, so the base image is made
with debootstrap and imported; a containers.conf without rlimits; runc with cgroupfs.

Images are kept in podman's store between tests of one run (and runs): the base image is made
once (`localhost/debian:bookworm`, tagged as debian:12 and debian:12-slim), the dhaf image is
rebuilt each time from the tree (about a minute; what a rebuild leaves untagged is removed at
the end, so the store does not grow run by run). Containers are named `dhaf-ct<pid>-...` and
removed on every exit path (end, exception, SIGINT, SIGTERM).

Exit 77 (ctest's skip) when podman, buildah, runc or debootstrap is missing or not root, with
the command that installs them."""
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "system"))
import dhafsys  # noqa: E402

wait_until = dhafsys.wait_until  # the tests' one poll, also as podlab.wait_until

SKIP = 77
BASE = "localhost/debian:bookworm"
BASE_TAGS = ("docker.io/library/debian:12", "docker.io/library/debian:12-slim")
TOOLS = ("podman", "buildah", "runc", "debootstrap")


def skip(why):
    """Exit 77 (a ctest skip); a failure where DHAF_DEPLOY_REQUIRED=1 (.ci/run installs the
    tools, so a skip there would hide a broken test)."""
    if os.environ.get("DHAF_DEPLOY_REQUIRED") == "1":
        print(f"FAIL: {why} (DHAF_DEPLOY_REQUIRED=1)", flush=True)
        sys.exit(1)
    print(f"SKIP: {why}", flush=True)
    sys.exit(SKIP)


def tools_or_skip():
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        skip(f"{', '.join(missing)} not installed (apt-get install -y podman buildah runc "
             "debootstrap; .ci/run does)")
    if os.geteuid() != 0:
        skip("containers here need root (podman with runc and cgroupfs)")


class Lab:
    """podman/buildah with this machine's settings, and the containers one test started."""

    def __init__(self, prefix="dhaf-ct"):
        tools_or_skip()
        self.tmp = tempfile.mkdtemp(prefix="dhaf-podlab-")
        self.conf = os.path.join(self.tmp, "containers.conf")
        with open(self.conf, "w") as f:
            f.write("[containers]\ndefault_ulimits = []\n")
        self.env = dict(os.environ, CONTAINERS_CONF=self.conf)
        self.prefix = f"{prefix}{os.getpid()}-"
        self.closed = False
        self.dangling_before = set(self._image_ids("--filter", "dangling=true"))
        atexit.register(self.close)
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._on_signal)

    def _on_signal(self, signum, _frame):
        self.close()
        sys.exit(128 + signum)

    # ---------------------------------------------------------------- commands

    def podman(self, *args, check=True, timeout=300, capture=True, input=None):
        cmd = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs", *args]
        r = subprocess.run(cmd, env=self.env, capture_output=capture, text=True, timeout=timeout,
                           input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def buildah_bud(self, context, dockerfile, tag, build_args=(), timeout=1800, ignorefile=None):
        """buildah bud in the docker format (the OCI format drops HEALTHCHECK), from local
        images only, chroot isolation (no cgroups or user namespaces needed). No --layers: a
        layer cache would keep every build's stages (about 1 GB a build of the tree) in the
        store; the images the tests reuse are tagged and built once."""
        cmd = ["buildah", "bud", "--pull=never", "--isolation", "chroot", "--format", "docker",
               "-f", dockerfile, "-t", tag]
        for a in build_args:
            cmd += ["--build-arg", a]
        if ignorefile:
            cmd += ["--ignorefile", ignorefile]
        cmd.append(context)
        t0 = time.monotonic()
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"buildah bud {tag}: exit {r.returncode}\n"
                               f"{r.stdout[-6000:]}\n{r.stderr[-3000:]}")
        return time.monotonic() - t0

    def image_exists(self, name):
        return self.podman("image", "exists", name, check=False).returncode == 0

    def inspect_image(self, name):
        return json.loads(self.podman("image", "inspect", name).stdout)[0]

    # ---------------------------------------------------------------- images

    def ensure_base(self):
        """The Debian 12 base image, made once with debootstrap (minbase) from Debian's archive.
        Returns how: "cached" or "made in N s"."""
        if self.image_exists(BASE):
            for t in BASE_TAGS:
                if not self.image_exists(t):
                    self.podman("tag", BASE, t)
            return "cached"
        t0 = time.monotonic()
        rootfs = os.path.join(self.tmp, "rootfs")
        mirror = os.environ.get("DHAF_DEBIAN_MIRROR", "http://deb.debian.org/debian")
        r = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", rootfs, mirror],
                           capture_output=True, text=True, timeout=1200)
        if r.returncode != 0:
            raise RuntimeError(f"debootstrap: exit {r.returncode}\n{r.stdout[-3000:]}"
                               f"\n{r.stderr[-3000:]}")
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(["podman", "import", "-", BASE], stdin=tar.stdout, env=self.env,
                             capture_output=True, text=True, timeout=600)
        tar.stdout.close()
        tar.wait()
        shutil.rmtree(rootfs, ignore_errors=True)
        if imp.returncode != 0:
            raise RuntimeError(f"podman import: {imp.stderr}")
        for t in BASE_TAGS:
            self.podman("tag", BASE, t)
        return f"made in {time.monotonic() - t0:.0f} s"

    def build_debs(self, build_dir):
        """`make deb`'s packages from an existing build tree (cpack). Returns their paths."""
        out = os.path.join(build_dir, "deb")
        for f in os.listdir(out) if os.path.isdir(out) else []:
            if f.endswith(".deb"):
                os.unlink(os.path.join(out, f))
        r = subprocess.run(["cpack", "-G", "DEB"], cwd=build_dir, capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"cpack: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr}")
        debs = sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".deb"))
        if len(debs) != 4:
            raise RuntimeError(f"cpack made {len(debs)} packages, not 4: {debs}")
        return debs

    def build_dhaf_image(self, src, build_dir, tag, commit):
        """deploy/docker/Dockerfile as users build it: the tree is the context (less what
        Dockerfile.dockerignore leaves out) and the build stage compiles (about a minute here).
        With DHAF_IMAGE_FROM_DEBS=1 instead: the build tree's packages in deploy/docker/debs/
        of a context of their own, which the build stage takes as they are (seconds).
        Returns (seconds, how)."""
        if os.environ.get("DHAF_IMAGE_FROM_DEBS") != "1":
            secs = self.buildah_bud(src, os.path.join(src, "deploy/docker/Dockerfile"), tag,
                                    [f"DHAF_GIT_COMMIT={commit}"],
                                    ignorefile=os.path.join(src, "deploy/docker/Dockerfile.dockerignore"))
            return secs, "from source (build stage compiled)"
        ctx = os.path.join(self.tmp, "context")
        shutil.rmtree(ctx, ignore_errors=True)
        os.makedirs(os.path.join(ctx, "deploy/docker/debs"))
        os.makedirs(os.path.join(ctx, "scripts"))
        for f in ("deploy/docker/Dockerfile", "deploy/docker/healthcheck",
                  "scripts/install-deps.sh"):
            shutil.copy2(os.path.join(src, f), os.path.join(ctx, f))
        for d in self.build_debs(build_dir):
            shutil.copy2(d, os.path.join(ctx, "deploy/docker/debs"))
        secs = self.buildah_bud(ctx, os.path.join(ctx, "deploy/docker/Dockerfile"), tag,
                                [f"DHAF_GIT_COMMIT={commit}"])
        return secs, "from the build tree's .deb packages"

    def build_etcd_image(self, tag):
        """A stand-in for an etcd image no registry here serves: Debian's etcd-server (3.4, not
        the manifests' 3.5), with etcd at /usr/local/bin/etcd as in the upstream image."""
        if self.image_exists(tag):
            return "cached"
        ctx = os.path.join(self.tmp, "etcd-context")
        os.makedirs(ctx, exist_ok=True)
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write("FROM debian:12\n"
                    "RUN apt-get update && apt-get install -y --no-install-recommends "
                    "etcd-server etcd-client && rm -rf /var/lib/apt/lists/* "
                    "&& ln -s /usr/bin/etcd /usr/local/bin/etcd "
                    "&& ln -s /usr/bin/etcdctl /usr/local/bin/etcdctl\n"
                    'ENTRYPOINT ["/usr/local/bin/etcd"]\n')
        secs = self.buildah_bud(ctx, os.path.join(ctx, "Dockerfile"), tag)
        return f"made in {secs:.0f} s"

    # ---------------------------------------------------------------- containers

    def run(self, name, image, *args, opts=()):
        """Starts a detached container on the host network (loopback addresses reach it)."""
        full = self.prefix + name
        self.podman("run", "-d", "--name", full, "--network=host", *opts, image, *args)
        return full

    def logs(self, name):
        r = self.podman("logs", name, check=False)
        return r.stdout + r.stderr

    def healthcheck(self, name):
        """`podman healthcheck run`: (healthy?, output)."""
        r = self.podman("healthcheck", "run", name, check=False, timeout=60)
        return r.returncode == 0, (r.stdout + r.stderr).strip()

    def _image_ids(self, *filters):
        r = self.podman("images", "-a", "--no-trunc", "--format", "{{.ID}}", *filters,
                        check=False)
        return r.stdout.split()

    def names(self):
        r = self.podman("ps", "-a", "--format", "{{.Names}}", check=False)
        return [n for n in r.stdout.split() if n.startswith(self.prefix)]

    def close(self):
        if self.closed:
            return
        self.closed = True
        names = self.names()
        if names:
            self.podman("rm", "-f", "-t", "2", *names, check=False, timeout=120)
        # what this run left untagged (a stage, an image whose tag a rebuild took): gone, so
        # the store does not grow by an image per run; what was untagged before is not touched
        stale = [i for i in self._image_ids("--filter", "dangling=true")
                 if i not in self.dangling_before]
        if stale:
            self.podman("rmi", *stale, check=False, timeout=120)
        shutil.rmtree(self.tmp, ignore_errors=True)
