# SPDX-License-Identifier: MIT
"""bench/election: leader failover time over repeated kill -9 of the leader.

Three dhaf-node processes and one etcd on loopback; each round kills the leader with SIGKILL
and measures the time until another node has won the election (its new-leader log line and
the leader key agree), then restarts the killed node. Prints min / median / max.
usage: /usr/bin/python3 bench/election.py BUILD_BIN_DIR [ROUNDS] [TTL]"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "system"))
from dhafsys import Cluster, wait_until  # noqa: E402


def main():
    bin_dir = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    ttl = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    c = Cluster(bin_dir, n=3, ttl=ttl)
    times = []
    try:
        c.start_all()
        for r in range(rounds):
            old = c.wait_leader(ttl + 5)
            wait_until("every node alive",
                       lambda: len(c.etcd.get_prefix(c.prefix + "alive/")) == 3, ttl + 5)
            wins_before = {n.name: len(n.log_events("new-leader")) for n in c.nodes}
            t0 = time.monotonic()
            c.node(old).kill()
            new = wait_until(
                "a new leader",
                lambda: next((n.name for n in c.nodes if n.name != old and
                              len(n.log_events("new-leader")) > wins_before[n.name] and
                              c.leader() == n.name), None),
                ttl + 5, 0.005)
            took = time.monotonic() - t0
            times.append(took)
            print(f"round {r + 1:2d}: kill -9 {old} -> {new} leads after {took * 1000:6.0f} ms",
                  flush=True)
            c.node(old).start()
    finally:
        c.close()
    ms = sorted(t * 1000 for t in times)
    print(f"\nleader failover after kill -9 (leader-key-ttl {ttl} s, {len(ms)} rounds): "
          f"min {ms[0]:.0f} ms, median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms")
    print(f"bound from the design: TTL + one campaign = {ttl * 1000} ms + a few ms")


if __name__ == "__main__":
    main()
