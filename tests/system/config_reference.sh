#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# docs/config.md's generated tables must equal `dhaf-node --config-reference` (no drift
# between the documentation and the key tables in the code).
# usage: config_reference.sh DHAF_NODE SOURCE_DIR
set -eu
node=$1
doc=$2/docs/config.md
want=$(sed -n '/^<!-- BEGIN GENERATED/,/^<!-- END GENERATED/p' "$doc" | sed '1d;$d')
got=$("$node" --config-reference)
if [ "$want" != "$got" ]; then
    echo "docs/config.md is out of date with the key tables; regenerate its GENERATED block:"
    diff <(echo "$want") <(echo "$got") | head -40
    echo "0 passed, 1 failed"
    exit 1
fi
echo "docs/config.md matches the key tables ($(grep -c '^| `' <<<"$got") parameters)"
echo "1 passed, 0 failed"
