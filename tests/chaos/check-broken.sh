#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Shows that the chaos checker catches a broken dhaf: builds dhaf-node with fencing removed
# (tests/chaos/broken-fencing.patch: the lease deadline, the keep-alive failure, the leader-key
# watch and the epoch compare of term_txn all ignored - a leader that lost its lease keeps
# acting) in a scratch worktree, runs ROUNDS (default 4) rounds of freeze-in-switch against it
# and expects violations. Exit 0 when the checker caught it, 1 when it did not.
# Usage: sudo tests/chaos/check-broken.sh [ROUNDS]   (docs/chaos.md "A broken build is caught")
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-4}
tree=$(mktemp -d /tmp/dhaf-broken-XXXXXX)
cleanup() { git worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"; }
trap cleanup EXIT
git worktree add -q --detach "$tree" HEAD
git -C "$tree" apply "$PWD/tests/chaos/broken-fencing.patch"
echo "check-broken: building dhaf-node with fencing removed in $tree"
cmake -S "$tree" -B "$tree/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDHAF_TESTS=OFF \
  -DDHAF_BENCH=OFF >/dev/null
cmake --build "$tree/build" -j "$(nproc)" --target dhaf-node dhaf-prober >/dev/null
rc=0
DHAF_CHAOS_FAULT=freeze-in-switch /usr/bin/python3 tests/chaos/chaos.py "$tree/build/bin" \
  --rounds "$rounds" || rc=$?
if [ "$rc" -eq 1 ]; then
  echo "check-broken: caught (the VIOLATION lines above say which invariant)"
  exit 0
fi
echo "check-broken: NOT caught (chaos exit $rc)"
exit 1
