#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# dhaf-node --check-config against hostile inputs: each must give a clear error and exit 2,
# never crash (also run from the ASan build by `make asan`).
# usage: check_config_inputs.sh DHAF_NODE SOURCE_DIR
set -u
node=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0

# expect NAME WANT_RC PATTERN -- ARGS...: runs dhaf-node, checks exit code and output.
expect() {
    local name=$1 want=$2 pattern=$3
    shift 4
    local out rc
    out=$("$node" "$@" 2>&1)
    rc=$?
    if [ "$rc" -eq "$want" ] && grep -qE -- "$pattern" <<<"$out"; then
        pass=$((pass + 1))
        echo "ok   $name (exit $rc): $(head -c 160 <<<"$out" | head -1)"
    else
        fail=$((fail + 1))
        echo "FAIL $name: want exit $want and /$pattern/, got exit $rc:"
        head -c 2000 <<<"$out" | sed 's/^/     /'
    fi
}

head -c 65536 /dev/urandom >"$tmp/random.bin"
: >"$tmp/empty.dhaf"
# 50 MB: a valid-looking YAML start followed by padding.
{ echo "dhaf:"; head -c $((50 * 1024 * 1024)) /dev/zero | tr '\0' '#'; } >"$tmp/big.dhaf"
cat >"$tmp/bomb.dhaf" <<'YAML'
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
YAML
head -c 65536 /dev/urandom | tr -d '\0' >"$tmp/random-nonul.bin"
printf 'dhaf:\n  cluster-name: caf\xe9\n' >"$tmp/latin1.dhaf"
mkdir "$tmp/dir.dhaf"
# deep nesting
{ printf 'dhaf: '; for _ in $(seq 1 5000); do printf '['; done; echo; } >"$tmp/deep.dhaf"
printf 'dhaf:\n  cluster-name: "a\0b"\n' >"$tmp/nul.dhaf"

expect "seed example"    0 '^OK$'                          -- --check-config --config "$src/examples/config-n1.dhaf"
expect "random bytes"    2 'random.bin.*(UTF-8|NUL byte|YAML)' -- --check-config --config "$tmp/random.bin"
expect "random, no NUL"  2 'random-nonul.bin:[0-9]+:[0-9]+: error: (the file is not valid UTF-8|YAML syntax)' -- --check-config --config "$tmp/random-nonul.bin"
expect "empty file"      2 'empty.dhaf:1:1: error: dhaf.cluster-name: missing' -- --check-config --config "$tmp/empty.dhaf"
expect "50 MB file"      2 'big.dhaf: error: the file is 52428806 bytes; a config file may be at most 1048576' -- --check-config --config "$tmp/big.dhaf"
expect "YAML bomb"       2 'bomb.dhaf:6:.*aliases expand this document past 100000 nodes' -- --check-config --config "$tmp/bomb.dhaf"
expect "non-UTF-8"       2 'latin1.dhaf:2:.*not valid UTF-8' -- --check-config --config "$tmp/latin1.dhaf"
expect "directory"       2 'dir.dhaf: error: is a directory' -- --check-config --config "$tmp/dir.dhaf"
expect "deep nesting"    2 'deep.dhaf:1:.*nesting deeper than 64 levels' -- --check-config --config "$tmp/deep.dhaf"
expect "NUL byte"        2 'nul.dhaf:2:.*NUL' -- --check-config --config "$tmp/nul.dhaf"
# Notifier filters and the webhook notifier: each bad value named with its line and path.
# wh CASE NOTIFIER-YAML: the seed example plus one notifier (flow style, on one line).
wh() {
    { cat "$src/examples/config-n1.dhaf"; printf 'notifiers:\n  - %s\n' "$2"; } >"$tmp/$1.dhaf"
}
wh wh-ok '{type: webhook, url: "https://hooks.example.test/T0/B1/s3cr3t-path", secret: k3y-5ecret, format: slack, events: [failover, ep-down], min-severity: warning, repeat-window: 60}'
wh wh-url '{type: webhook, url: "ftp://hooks.example.test/s3cr3t-path"}'
wh wh-nourl '{type: webhook, secret: abc}'
wh wh-kind '{type: webhook, url: "https://h.test/x", events: [failover, ep-dwon]}'
wh wh-kind2 '{type: email, from: a@b.test, to: c@d.test, smtp: {server: h.test, port: 25}, events: "ep-down,node-gone"}'
wh wh-sev '{type: tg, token: "123:abc", join-code: x1y2z3w4v5, min-severity: urgent}'
wh wh-window '{type: webhook, url: "https://h.test/x", repeat-window: -5}'
wh wh-format '{type: webhook, url: "https://h.test/x", format: xml}'
expect "webhook ok"      0 '^OK$'                          -- --check-config --config "$tmp/wh-ok.dhaf"
expect "webhook bad url" 2 'wh-url.dhaf:25:.*notifiers\[0\]\.url: is not an http:// or https:// URL' -- --check-config --config "$tmp/wh-url.dhaf"
if "$node" --check-config --config "$tmp/wh-url.dhaf" 2>&1 | grep -q 's3cr3t'; then
    fail=$((fail + 1)); echo "FAIL the webhook URL (a secret) is echoed in the error"
else
    pass=$((pass + 1)); echo "ok   the webhook URL (a secret) is not echoed in the error"
fi
expect "webhook no url"  2 'wh-nourl.dhaf:25:.*notifiers\[0\]\.url: missing' -- --check-config --config "$tmp/wh-nourl.dhaf"
expect "unknown kind"    2 'wh-kind.dhaf:25:.*notifiers\[0\]\.events\[1\]: unknown event kind "ep-dwon" \(did you mean "ep-down"\?\)' -- --check-config --config "$tmp/wh-kind.dhaf"
expect "unknown kind, a,b" 2 'wh-kind2.dhaf:25:.*notifiers\[0\]\.events: unknown event kind "node-gone"' -- --check-config --config "$tmp/wh-kind2.dhaf"
expect "bad severity"    2 'wh-sev.dhaf:25:.*notifiers\[0\]\.min-severity: "urgent" is not allowed; expected info, warning or critical' -- --check-config --config "$tmp/wh-sev.dhaf"
expect "bad window"      2 'wh-window.dhaf:25:.*notifiers\[0\]\.repeat-window: -5 is out of range' -- --check-config --config "$tmp/wh-window.dhaf"
expect "bad format"      2 'wh-format.dhaf:25:.*notifiers\[0\]\.format: "xml" is not allowed; expected json, slack or text' -- --check-config --config "$tmp/wh-format.dhaf"
expect "missing file"    2 'cannot open the config file: No such file' -- --check-config --config "$tmp/nope.dhaf"
expect "no --config"     2 'config FILE is required' -- --check-config
expect "unknown option"  2 'unknown option --frobnicate' -- --frobnicate
expect "help"            0 'usage: dhaf-node'              -- --help
expect "version"         0 '^dhaf-node [0-9]+\.[0-9]+'      -- --version

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
