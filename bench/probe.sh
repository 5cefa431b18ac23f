#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/probe: HTTP checks/s and CPU-seconds per 10,000 checks of dhaf's web checker against
# 1,000 local targets, beside Prometheus blackbox_exporter probing the same targets in the same
# run. Figures only, never pass/fail. Builds nothing (run `make build` first).
# usage: bench/probe.sh [--seconds N] [--targets N] [--concurrency N] [--no-blackbox]
#   --seconds N      length of each side's measurement (default 10)
#   --targets N      loopback targets 127.0.1.1, 127.0.1.2, ... (default 1000)
#   --concurrency N  probes in flight at the exporter (default 128)
#   --no-blackbox    the dhaf column only
# Environment: BUILD (build dir, default build), BLACKBOX_EXPORTER (default
# /usr/bin/prometheus-blackbox-exporter).
# The targets are dhaf-bench-httpd; dhaf's side is dhaf-bench-probe calling the checker's
# check() over every target, round after round, in its own process (its getrusage is the CPU).
# The exporter's side is the exporter process's utime+stime from /proc, while dhaf-bench-probe
# --blackbox drives it; that client's CPU is shown apart and not counted. When the exporter
# (Debian prometheus-blackbox-exporter) is missing it is installed with apt-get as root; when
# that fails its column says so. Progress goes to stderr, the table to stdout.
# Takes about 2 x (seconds + 5) s. Every process started here is stopped on exit.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-build}
case $build in
/*) ;;
*) build=$src/$build ;;
esac
seconds=10
targets=1000
concurrency=128
blackbox=1
usage() {
    cat <<'EOF'
usage: bench/probe.sh [--seconds N] [--targets N] [--concurrency N] [--no-blackbox]
  --seconds N      length of each side's measurement (default 10)
  --targets N      loopback targets 127.0.1.1, 127.0.1.2, ... (default 1000)
  --concurrency N  probes in flight at the exporter (default 128)
  --no-blackbox    the dhaf column only
Environment: BUILD (build dir, default build), BLACKBOX_EXPORTER (the exporter binary,
default /usr/bin/prometheus-blackbox-exporter). Figures only, never pass/fail.
EOF
}
while [ $# -gt 0 ]; do
    case $1 in
    --seconds | --targets | --concurrency)
        if [ $# -lt 2 ] || ! [[ $2 =~ ^[0-9]+$ ]] || [ "$2" -lt 1 ]; then
            echo "bench/probe.sh: $1 needs a positive number" >&2
            exit 2
        fi
        case $1 in
        --seconds) seconds=$2 ;;
        --targets) targets=$2 ;;
        --concurrency) concurrency=$2 ;;
        esac
        shift 2
        ;;
    --no-blackbox)
        blackbox=0
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "bench/probe.sh: unknown argument $1" >&2
        usage >&2
        exit 2
        ;;
    esac
done

probe=$build/bin/dhaf-bench-probe
httpd=$build/bin/dhaf-bench-httpd
for b in "$probe" "$httpd"; do
    if [ ! -x "$b" ]; then
        echo "bench/probe.sh: $b not found; run \`make build\` first" >&2
        exit 1
    fi
done
exporter=${BLACKBOX_EXPORTER:-/usr/bin/prometheus-blackbox-exporter}

# Every process started here has a bounded life of its own as well (httpd --lifetime, timeout),
# so a killed script leaves nothing running for long.
bound=$((2 * seconds + 180))
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dhaf-bench-probe.XXXXXX")
httpd_pid=
exporter_pid=
exporter_timeout_pid=
client_pid=
stop() { # pid: SIGTERM, then SIGKILL after 5 s
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    stop "$client_pid"
    stop "$exporter_timeout_pid"
    stop "$exporter_pid"
    stop "$httpd_pid"
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a dhaf-bench-probe side in the background (so a signal reaches this script at once),
# its key=value line into $tmp/$1.out. Returns its exit code.
run_side() {
    local name=$1
    shift
    timeout -s TERM "$bound" "$probe" "$@" >"$tmp/$name.out" &
    client_pid=$!
    local rc=0
    wait "$client_pid" || rc=$?
    client_pid=
    return $rc
}

# CPU ticks (utime + stime) of a process, from /proc; empty when it is gone.
ticks() {
    sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }'
}

# --- the targets
"$httpd" --count "$targets" --lifetime "$bound" >"$tmp/httpd.out" &
httpd_pid=$!
port=
for i in $(seq 100); do
    port=$(sed -n 's/^port=//p' "$tmp/httpd.out")
    [ -n "$port" ] && break
    kill -0 "$httpd_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$port" ]; then
    echo "bench/probe.sh: dhaf-bench-httpd did not start" >&2
    exit 1
fi
a=$((0x7f000101 + targets - 1))
last=$((a >> 24 & 255)).$((a >> 16 & 255)).$((a >> 8 & 255)).$((a & 255))
echo "bench/probe.sh: $targets targets on 127.0.1.1 ... $last port $port" >&2

# --- dhaf
echo "bench/probe.sh: dhaf web checker, $seconds s ..." >&2
dhaf_rc=0
h0=$(ticks "$httpd_pid")
run_side dhaf --port "$port" --targets "$targets" --seconds "$seconds" || dhaf_rc=$?
h1=$(ticks "$httpd_pid")
httpd_dhaf=$((${h1:-0} - ${h0:-0}))
httpd_bb=
[ "$dhaf_rc" -eq 0 ] || echo "bench/probe.sh: the dhaf side failed (exit $dhaf_rc)" >&2

# --- blackbox_exporter
bb_note=
if [ "$blackbox" -eq 0 ]; then
    bb_note="blackbox_exporter: skipped (--no-blackbox)"
elif [ ! -x "$exporter" ]; then
    if [ -z "${BLACKBOX_EXPORTER:-}" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "bench/probe.sh: installing prometheus-blackbox-exporter with apt-get ..." >&2
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -q prometheus-blackbox-exporter >"$tmp/apt.log" 2>&1; then
            apt-get update >>"$tmp/apt.log" 2>&1 || true
            apt-get install -y -q prometheus-blackbox-exporter >>"$tmp/apt.log" 2>&1 || true
        fi
    fi
    if [ ! -x "$exporter" ]; then
        if [ -n "${BLACKBOX_EXPORTER:-}" ]; then
            bb_note="blackbox_exporter: NOT MEASURED: $exporter not found"
        else
            bb_note="blackbox_exporter: NOT MEASURED: prometheus-blackbox-exporter is not installed and apt-get could not install it"
        fi
        [ -f "$tmp/apt.log" ] && tail -n 3 "$tmp/apt.log" >&2
    fi
fi
if [ -z "$bb_note" ]; then
    bb_version=$("$exporter" --version 2>&1 | sed -n '1s/.*version \([^ ]*\).*/\1/p')
    cat >"$tmp/blackbox.yml" <<'EOF'
modules:
  http_2xx:
    prober: http
    timeout: 5s
EOF
    bb_port=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' 2>/dev/null || echo 19115)
    timeout -s TERM "$bound" "$exporter" --config.file="$tmp/blackbox.yml" \
        --web.listen-address="127.0.0.1:$bb_port" --log.level=warn >"$tmp/exporter.log" 2>&1 &
    exporter_timeout_pid=$!
    for i in $(seq 100); do
        exporter_pid=$(pgrep -P "$exporter_timeout_pid" || true)
        [ -n "$exporter_pid" ] && break
        sleep 0.05
    done
    if [ -z "$exporter_pid" ]; then
        bb_note="blackbox_exporter: NOT MEASURED: it did not start ($(tail -n 1 "$tmp/exporter.log"))"
    else
        echo "bench/probe.sh: blackbox_exporter $bb_version (pid $exporter_pid) on" \
            "127.0.0.1:$bb_port, $concurrency probes in flight, $seconds s ..." >&2
        bb_rc=0
        h0=$(ticks "$httpd_pid")
        run_side blackbox --port "$port" --targets "$targets" --seconds "$seconds" \
            --blackbox "127.0.0.1:$bb_port" --blackbox-pid "$exporter_pid" \
            --concurrency "$concurrency" || bb_rc=$?
        h1=$(ticks "$httpd_pid")
        httpd_bb=$((${h1:-0} - ${h0:-0}))
        if [ "$bb_rc" -ne 0 ]; then
            bb_note="blackbox_exporter: NOT MEASURED: the driving client failed (exit $bb_rc)"
            tail -n 3 "$tmp/exporter.log" >&2
        fi
    fi
    stop "$exporter_timeout_pid"
    exporter_timeout_pid=
    exporter_pid=
fi
stop "$httpd_pid"
httpd_pid=

# --- the table
touch "$tmp/dhaf.out" "$tmp/blackbox.out"
awk -v seconds="$seconds" -v targets="$targets" -v note="$bb_note" \
    -v bbv="${bb_version:-}" -v conc="$concurrency" -v tck="$(getconf CLK_TCK)" \
    -v hd="$httpd_dhaf" -v hb="$httpd_bb" '
function kv(line, arr,    n, i, f, p) {
    n = split(line, f, " ")
    for (i = 1; i <= n; i++) {
        p = index(f[i], "=")
        if (p > 0)
            arr[substr(f[i], 1, p - 1)] = substr(f[i], p + 1)
    }
}
FILENAME ~ /dhaf.out$/ && /^side=/ { kv($0, d) }
FILENAME ~ /blackbox.out$/ && /^side=/ { kv($0, b) }
function col(arr, what) {
    if (!("checks" in arr))
        return "-"
    if (what == "rate")
        return sprintf("%.0f", arr["checks_per_s"])
    if (what == "per10k")
        return sprintf("%.3f", arr["cpu_s_per_10k"])
    if (what == "percpu")
        return arr["cpu_s"] > 0 ? sprintf("%.0f", arr["checks"] / arr["cpu_s"]) : "-"
    return arr["failures"]
}
END {
    printf "probe benchmark: %d local HTTP targets, %d s per side\n", targets, seconds
    printf "%-26s%-20s%s\n", "", "dhaf web checker", "blackbox_exporter"
    printf "%-26s%-20s%s\n", "checks/s", col(d, "rate"), col(b, "rate")
    printf "%-26s%-20s%s\n", "CPU-s per 10,000 checks", col(d, "per10k"), col(b, "per10k")
    ratio = ""
    if (("checks" in d) && ("checks" in b) && d["cpu_s"] > 0 && b["cpu_s"] > 0 && b["checks"] > 0)
        ratio = sprintf("   (dhaf = %.1f x)", (d["checks"] / d["cpu_s"]) / (b["checks"] / b["cpu_s"]))
    printf "%-26s%-20s%s%s\n", "checks per CPU-second", col(d, "percpu"), col(b, "percpu"), ratio
    printf "%-26s%-20s%s\n", "failures", col(d, "fail"), col(b, "fail")
    if ("checks" in d)
        printf "dhaf: CPU of the checking process (getrusage): %.2f CPU-s in %.2f s " \
            "(user %.2f, system %.2f)\n", d["cpu_s"], d["seconds"], d["cpu_user_s"], d["cpu_sys_s"]
    else
        print "dhaf: NOT MEASURED (see the messages above)"
    if (note != "")
        print note
    else if ("checks" in b)
        printf "blackbox_exporter %s: CPU of the exporter process (/proc): %.2f CPU-s in " \
            "%.2f s (user %.2f, system %.2f); its client (%d in flight) used %.2f CPU-s, " \
            "not counted\n", bbv, b["cpu_s"], b["seconds"], b["cpu_user_s"], b["cpu_sys_s"], \
            conc, b["client_cpu_s"]
    ht = ""
    if (("checks" in d) && d["checks"] > 0)
        ht = sprintf("%.3f while dhaf checked", hd / tck / d["checks"] * 10000)
    if (hb != "" && ("checks" in b) && b["checks"] > 0)
        ht = ht sprintf(", %.3f while the exporter probed", hb / tck / b["checks"] * 10000)
    if (ht != "")
        print "targets (dhaf-bench-httpd, not counted): CPU-s per 10,000 checks " ht
}' "$tmp/dhaf.out" "$tmp/blackbox.out"
[ "$dhaf_rc" -eq 0 ] || exit 1
