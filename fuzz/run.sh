#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs every fuzz target built in BUILD_DIR (make fuzz) for SECONDS each, one after the other,
# on a copy of its seed corpus: fuzz/corpus/<target>/ is copied into BUILD_DIR/corpus-<target>/,
# where new inputs go too (the tree is never written). A crash, leak, timeout or out-of-memory
# fails the run and its input is named (BUILD_DIR/findings-<target>/). Per-target libFuzzer
# options (max_len, ...) come from fuzz/<target>.options, one `-flag=value` a line, and a
# libFuzzer dictionary from fuzz/<target>.dict when there is one.
#   usage: fuzz/run.sh BUILD_DIR SECONDS [TARGET...]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: fuzz/run.sh BUILD_DIR SECONDS [TARGET...]}
seconds=${2:?usage: fuzz/run.sh BUILD_DIR SECONDS [TARGET...]}
shift 2
build=$(cd "$build" && pwd)

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for b in "$build"/bin/fuzz_*; do
    [ -x "$b" ] && targets+=("$(basename "$b")")
  done
fi
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no fuzz targets in $build/bin (build them with: make fuzz)" >&2
  exit 2
fi

failed=()
summary=()
for t in "${targets[@]}"; do
  bin="$build/bin/$t"
  if [ ! -x "$bin" ]; then
    echo "fuzz: $bin is not built" >&2
    failed+=("$t (not built)")
    continue
  fi
  corpus="$build/corpus-$t"
  findings="$build/findings-$t"
  mkdir -p "$corpus" "$findings"
  if [ -d "$here/corpus/$t" ]; then
    cp -n "$here/corpus/$t"/* "$corpus"/ 2>/dev/null || true
  fi
  opts=()
  if [ -f "$here/$t.options" ]; then
    while IFS= read -r line; do
      case "$line" in '' | '#'*) continue ;; esac
      opts+=("$line")
    done <"$here/$t.options"
  fi
  if [ -f "$here/$t.dict" ]; then
    opts+=("-dict=$here/$t.dict")
  fi
  log="$build/fuzz-$t.log"
  echo "== $t: ${seconds} s on $(ls "$corpus" | wc -l) inputs (${opts[*]:-default options})"
  # -timeout: one input may take at most 10 s; -rss_limit_mb: the process at most 2 GiB.
  # LeakSanitizer is on (libFuzzer's default with ASan): a leak fails the run.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$findings/" "${opts[@]}" "$corpus" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -1 | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
  summary+=("$(printf '%-18s %12s runs  cov %-6s  exit %d' "$t" "${execs:-?}" "${cov:-?}" "$rc")")
  if [ $rc -ne 0 ]; then
    echo "fuzz: $t FAILED (exit $rc); the end of its log ($log):" >&2
    tail -n 40 "$log" >&2
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    [ -n "$artifact" ] && echo "fuzz: $t: the input is $artifact (reproduce: $bin $artifact)" >&2
    failed+=("$t")
  fi
done

echo "== fuzz summary (${seconds} s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: every target ran ${seconds} s without a crash or leak"
