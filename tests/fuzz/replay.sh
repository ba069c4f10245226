#!/usr/bin/env bash
# tests/fuzz/replay.sh [--no-build] - runs every harness once over each input
# of its corpus (tests/fuzz/corpus/HARNESS) and every reproducer of a fixed
# bug (tests/fuzz/crashes/HARNESS): no fuzzing, so it is deterministic and
# takes seconds. Builds the harnesses first (clang, see fuzz.mk) unless told
# not to. Prints one line per harness and closes with
#   fuzz replay: N passed, M failed
# counting inputs; exits non-zero when any input failed (a crash, a leak, a
# sanitizer report, a violated property, a timeout or an allocation above
# 1 GiB) or the build did.
set -uo pipefail
cd "$(dirname "$0")/../.."
HARNESSES=(fuzz_input fuzz_router fuzz_cql fuzz_broker fuzz_wal)
B=build/fuzz
OPTS=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024)

if [[ "${1:-}" != --no-build ]]; then
    mkdir -p "$B"
    if ! make --no-print-directory -j2 fuzz-build > "$B/build.log" 2>&1; then
        tail -n 20 "$B/build.log"
        echo "fuzz replay: building the harnesses failed (log: $B/build.log)"
        echo "fuzz replay: 0 passed, 1 failed"
        exit 1
    fi
fi

passed=0 failed=0
for h in "${HARNESSES[@]}"; do
    inputs=()
    for d in tests/fuzz/corpus/$h tests/fuzz/crashes/$h; do
        [[ -d $d ]] && while IFS= read -r -d '' f; do inputs+=("$f"); done < <(find "$d" -type f -print0 | sort -z)
    done
    if ((${#inputs[@]} == 0)); then
        echo "$h: no inputs"
        failed=$((failed + 1))
        continue
    fi
    log=$B/replay-$h.log
    if "$B/$h" "${OPTS[@]}" "${inputs[@]}" > "$log" 2>&1; then
        passed=$((passed + ${#inputs[@]}))
        echo "$h: ${#inputs[@]} inputs passed"
        continue
    fi
    # Something failed: run each input alone, to count and to name them.
    bad=0
    for f in "${inputs[@]}"; do
        if "$B/$h" "${OPTS[@]}" "$f" > "$log.one" 2>&1; then
            passed=$((passed + 1))
        else
            bad=$((bad + 1))
            echo "$h: FAILED on $f:"
            grep -E 'ERROR|SUMMARY|property violated|Assertion' "$log.one" | head -n 4 | sed 's/^/    /'
        fi
    done
    if ((bad == 0)); then
        bad=1 # failed together, not alone: still a failure
        echo "$h: the inputs failed together but not one by one (log: $log)"
    fi
    failed=$((failed + bad))
done
echo "fuzz replay: $passed passed, $failed failed"
((failed == 0))
