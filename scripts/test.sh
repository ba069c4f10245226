#!/usr/bin/env bash
# Runs every test against builds that `make test` has just made:
#   1. unit tests (cmocka) and black-box HTTP tests (pytest) on the release build,
#   2. the same again on the ASan+UBSan build (leaks, overflows, UB abort the run).
# Ends with one summary line: "summary: N passed, M failed".
set -u
cd "$(dirname "$0")/.."

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
passed=0
failed=0
failures=()

count() { # count WORD TEXT -> the number before WORD in TEXT's last mention
    grep -oE "[0-9]+ $1" <<<"$2" | tail -n 1 | grep -oE '^[0-9]+' || echo 0
}

run_unit() {
    local variant=$1 t out rc p f
    for t in build/"$variant"/tests/test_*; do
        [ -x "$t" ] || continue
        out=$("$t" 2>&1)
        rc=$?
        printf '%s\n' "$out" | grep -E '^\[  (PASSED|FAILED|  ERROR)|^\[==========\] [0-9]+ test|ERROR|runtime error|Sanitizer' || true
        p=$(grep -oE '^\[  PASSED  \] [0-9]+' <<<"$out" | grep -oE '[0-9]+$' || echo 0)
        f=$(grep -oE '^\[  FAILED  \] [0-9]+ test' <<<"$out" | grep -oE '[0-9]+' || echo 0)
        if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then
            f=1 # crashed or a sanitizer aborted it
            printf '%s\n' "$out" | tail -n 30
        fi
        passed=$((passed + ${p:-0}))
        failed=$((failed + ${f:-0}))
        [ "${f:-0}" -eq 0 ] || failures+=("$variant unit $(basename "$t")")
    done
}

run_http() {
    local variant=$1 out rc p f e
    echo "== http tests ($variant build)"
    out=$(MESSENGER_BIN="$PWD/build/$variant/messenger" python3 -m pytest -q -p no:cacheprovider tests/http 2>&1)
    rc=$?
    printf '%s\n' "$out" | tail -n 40
    p=$(count passed "$(tail -n 1 <<<"$out")")
    f=$(count failed "$(tail -n 1 <<<"$out")")
    e=$(count error "$(tail -n 1 <<<"$out")")
    f=$((f + e))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p))
    failed=$((failed + f))
    [ "$f" -eq 0 ] || failures+=("$variant http")
}

for variant in release asan; do
    echo "== unit tests ($variant build)"
    run_unit "$variant"
    run_http "$variant"
done

if ((${#failures[@]})); then echo "failed: ${failures[*]}"; fi
echo "summary: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
