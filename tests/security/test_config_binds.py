# SPDX-License-Identifier: MIT
"""Issue 15, item 3: a non-loopback bind of web-api or grpc-api needs authentication.

Findings: web-api and grpc-api on 0.0.0.0 with a certificate, no client CA and no token passed
`dhaf-node --check-config` (TLS encrypts, it does not authenticate); `api-token: "a"`,
`join-code: "1"` and the k8s example's `REPLACE-ME...` secrets were accepted on public binds.
Now: refused with an error naming the key (never the secret), unless dhaf.insecure-api: true.
usage: test_config_binds.py BUILD_BIN_DIR
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "system"))
from dhafsys import run_tests  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
NODE = os.path.join(BIN, "dhaf-node")
STRONG = "4f1c9e2ab7d35608e1f2a3b4c5d6e7f8"  # 32 bytes
TLS = "tls: {cert-file: /nonexistent/node.pem, key-file: /nonexistent/node.key}"


def config(tmp, name, host="0.0.0.0", tls=TLS, dhaf_extra="", extra=""):
    text = f"""dhaf:
  cluster-name: c1
  node-name: n1
  web-api: {{host: {host}, port: 8128, {tls}}}
  grpc-api: {{host: {host}, port: 8129, {tls}}}
{dhaf_extra}etcd:
  hosts: http://127.0.0.1:2379
services:
  - name: main
    domain: foo.com
    entry-points:
      - {{name: ep-1, ip: 127.0.0.11}}
    switcher: {{type: exec, init: /bin/true, switch: /bin/true, timeout: 2}}
    health-checker: {{type: tcp, port: 80}}
{extra}"""
    path = os.path.join(tmp, name + ".dhaf")
    with open(path, "w") as f:
        f.write(text)
    return path


def check(path, env=None):
    r = subprocess.run([NODE, "--check-config", "--config", path], capture_output=True,
                       text=True, timeout=30, env=env)
    return r.returncode, r.stdout + r.stderr


def refused(path, must, secret=None, env=None):
    rc, out = check(path, env)
    assert rc == 2, f"{os.path.basename(path)}: want exit 2, got {rc}: {out}"
    for m in must:
        assert m in out, f"{os.path.basename(path)}: no {m!r} in: {out}"
    if secret:
        assert secret not in out, f"the secret {secret!r} is echoed: {out}"
    return out.strip().splitlines()[0]


def accepted(path, env=None):
    rc, out = check(path, env)
    assert rc == 0 and "OK" in out, f"{os.path.basename(path)}: want OK, got {rc}: {out}"


def tls_without_authentication():
    with tempfile.TemporaryDirectory(prefix="dhaf-sec-binds-") as tmp:
        first = refused(config(tmp, "tls-only"),
                        ["dhaf.web-api.host", "dhaf.grpc-api.host", "no authentication",
                         "client-ca-file"])
        # insecure-api stays the only way round it
        accepted(config(tmp, "insecure", dhaf_extra="  insecure-api: true\n"))
        # a client CA is authentication
        ca = "tls: {cert-file: /x/node.pem, key-file: /x/node.key, client-ca-file: /x/ca.pem}"
        accepted(config(tmp, "mtls", tls=ca))
        # loopback is as before: no token needed
        accepted(config(tmp, "loopback", host="127.0.0.1"))
    return first


def weak_and_placeholder_secrets():
    with tempfile.TemporaryDirectory(prefix="dhaf-sec-binds-") as tmp:
        notes = []
        # api-token "a"-like: short, given inline
        notes.append(refused(config(tmp, "short", dhaf_extra="  api-token: s3cr3t-x\n"),
                             ["dhaf.api-token", "shorter than 16 bytes"], secret="s3cr3t-x"))
        # the k8s example's placeholder, from a file
        tok = os.path.join(tmp, "api-token")
        with open(tok, "w") as f:
            f.write("REPLACE-ME-api-token-for-dhafctl-and-rest\n")
        os.chmod(tok, 0o600)
        notes.append(refused(config(tmp, "placeholder", dhaf_extra=f"  api-token-file: {tok}\n"),
                             ["dhaf.api-token-file", "placeholder"], secret="for-dhafctl"))
        # from the environment: the key is named, the value is not
        env = dict(os.environ, DHAF_SEC_TOKEN="weakling")
        refused(config(tmp, "env", dhaf_extra="  api-token: ${DHAF_SEC_TOKEN}\n"),
                ["dhaf.api-token", "shorter than 16 bytes"], secret="weakling", env=env)
        # a prober's token and a Telegram join-code
        probers = "probers:\n  - {name: p1, token: \"1\"}\n"
        refused(config(tmp, "prober", dhaf_extra=f"  api-token: {STRONG}\n", extra=probers),
                ["probers[0].token", "shorter than 16 bytes"])
        tg = ("notifiers:\n  - {type: tg, token: \"123:" + STRONG + "\", join-code: "
              "\"1\"}\n")
        refused(config(tmp, "join", dhaf_extra=f"  api-token: {STRONG}\n", extra=tg),
                ["notifiers[0].join-code", "shorter than 16 bytes"])
        # On loopback the same short secrets are the operator's business.
        accepted(config(tmp, "loop-short", host="127.0.0.1", dhaf_extra="  api-token: a\n",
                        extra=probers))
        # insecure-api turns the refusal into a warning
        rc, out = check(config(tmp, "insecure-short",
                               dhaf_extra="  api-token: s3cr3t-x\n  insecure-api: true\n"))
        assert rc == 0 and "warning: dhaf.api-token" in out and "s3cr3t-x" not in out, (rc, out)
    return " | ".join(notes)


def strong_token_accepted():
    with tempfile.TemporaryDirectory(prefix="dhaf-sec-binds-") as tmp:
        tg = ("notifiers:\n  - {type: tg, token: \"123:" + STRONG + "\", join-code: "
              f"\"{STRONG}\"}}\n" + f"probers:\n  - {{name: p1, token: \"{STRONG[::-1]}\"}}\n")
        accepted(config(tmp, "strong", dhaf_extra=f"  api-token: {STRONG}\n", extra=tg))
        accepted(config(tmp, "strong-no-tls", tls="", dhaf_extra=f"  api-token: {STRONG}\n"))
    return "32-byte token on 0.0.0.0 with TLS: OK"


def main():
    if not os.access(NODE, os.X_OK):
        print(f"skipped: no {NODE}")
        return 77
    return run_tests([
        ("0.0.0.0 with a certificate but no token or client CA is refused",
         tls_without_authentication),
        ("weak and placeholder secrets are refused on a public bind", weak_and_placeholder_secrets),
        ("a 32-byte token on 0.0.0.0 is accepted", strong_token_accepted),
    ])


if __name__ == "__main__":
    sys.exit(main())
