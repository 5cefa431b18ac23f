#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Regenerates the GENERATED block of docs/config.md from the key tables in the code.
# usage: scripts/gen-config-doc.sh [build/bin/dhaf-node]
set -euo pipefail
cd "$(dirname "$0")/.."
node=${1:-build/bin/dhaf-node}
doc=docs/config.md
tmp=$(mktemp)
sed '/^<!-- BEGIN GENERATED/,$d' "$doc" >"$tmp"
{ echo '<!-- BEGIN GENERATED: dhaf-node --config-reference -->'; "$node" --config-reference
  echo '<!-- END GENERATED -->'; sed '1,/^<!-- END GENERATED/d' "$doc"; } >>"$tmp"
mv "$tmp" "$doc"
echo "updated $doc"
