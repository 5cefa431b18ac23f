#!/bin/sh
# SPDX-License-Identifier: MIT
# The demo's exec switcher: "make site.demo point to entry point $1 (address $2)" by rewriting
# the hosts-style file next to this script. Idempotent, atomic (write, then rename). In
# production the cloudflare switcher does the same to site.demo's DNS A record.
set -eu
dir=$(dirname "$0")
tmp="$dir/hosts.tmp.$$"
{
    echo "# site.demo -> entry point $1, set by $DHAF_NODE (leader, epoch $DHAF_EPOCH)"
    echo "$2 site.demo # $1"
} >"$tmp"
mv -f "$tmp" "$dir/hosts"
