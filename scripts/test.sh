#!/usr/bin/env bash
# Runs every test against the builds that `make test` has just made:
#   1. unit tests (cmocka: ours and lib/cql's) and the black-box HTTP suite
#      (pytest) on the embedded store: release build, then ASan+UBSan build
#      with delayed completions, the adversarial suite (tests/security), the
#      HTTP suite under ThreadSanitizer, and the fuzz corpora replayed;
#   2. the web client end to end in headless Chromium (tests/web/run.sh);
#   3. a real Cassandra (scripts/cassandra start): lib/cql's integration test,
#      the same HTTP suite on the Cassandra store (release, ASan+UBSan with
#      delayed completions, TSan) and the adversarial suite,
#      and the Cassandra-only tests (driver compatibility, failover);
#   4. a local 3-node Cassandra cluster (scripts/cassandra cluster start 3,
#      beside the single node) and the cluster test on it (tests/cluster:
#      16 senders through kill -9 of a node, its restart, kill -9 of the first
#      contact point; about 5 minutes on 2 cores), then the cluster stopped.
# Ends with one summary line: "summary: N passed, M failed". A Cassandra that
# cannot start fails the run (MESSENGER_TEST_CASSANDRA=0 skips parts 3 and
# 4, MESSENGER_TEST_CLUSTER=0 part 4 alone, and each says so).
set -u
cd "$(dirname "$0")/.."

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
passed=0
failed=0
failures=()

tally() { # tally NAME PASSED FAILED
    passed=$((passed + $2))
    failed=$((failed + $3))
    [ "$3" -eq 0 ] || failures+=("$1")
}

count() { # count WORD TEXT -> the number before WORD in TEXT's last mention
    grep -oE "[0-9]+ $1" <<<"$2" | tail -n 1 | grep -oE '^[0-9]+' || echo 0
}

run_cmocka() { # run_cmocka NAME BINARY
    local out rc p f
    out=$("$2" 2>&1)
    rc=$?
    printf '%s\n' "$out" | grep -E '^\[  (PASSED|FAILED)|^\[==========\] [0-9]+ test|ERROR|runtime error|Sanitizer' || true
    p=$(grep -oE '^\[  PASSED  \] [0-9]+' <<<"$out" | grep -oE '[0-9]+$' || echo 0)
    f=$(grep -oE '^\[  FAILED  \] [0-9]+ test' <<<"$out" | grep -oE '[0-9]+' || echo 0)
    if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then
        f=1 # crashed, or a sanitizer stopped it
        printf '%s\n' "$out" | tail -n 30
    fi
    tally "$1" "${p:-0}" "${f:-0}"
}

run_unit() { # run_unit VARIANT
    local t
    echo "== unit tests ($1 build)"
    for t in build/"$1"/tests/test_* build/cql/"${1/release/.}"/test_*; do
        [ -x "$t" ] && run_cmocka "$1 unit $(basename "$t")" "$t"
    done
}

run_pytest() { # run_pytest NAME BINARY PATH [ENV=VALUE...]
    local name=$1 bin=$2 path=$3 out rc p f
    shift 3
    echo "== $name"
    out=$(env "$@" MESSENGER_BIN="$PWD/$bin" python3 -m pytest -q -p no:cacheprovider "$path" 2>&1)
    rc=$?
    printf '%s\n' "$out" | tail -n 40
    # pytest's own summary line ("1 failed, 291 passed in 27.3s"), wherever
    # later output (a driver's exit message) may have pushed it.
    local summary
    summary=$(grep -E '[0-9]+ (passed|failed|errors?)( |,).*in [0-9.]+s' <<<"$out" | tail -n 1)
    p=$(count passed "$summary")
    f=$(( $(count failed "$summary") + $(count error "$summary") ))
    if [ -z "$summary" ]; then
        echo "no pytest summary line found: counted as a failure"
        f=$((f + 1))
    fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    tally "$name" "$p" "$f"
}

# Test builds (asan, tsan) read MESSENGER_TEST_DELAY: every store, token and
# password completion is then delayed and delivered from another thread
# (src/store/store.c), the way a slow store answers. The ASan runs use it.
DELAY=MESSENGER_TEST_DELAY=1

for variant in release asan; do
    run_unit "$variant"
    if [ "$variant" = asan ]; then
        run_pytest "http tests, lmdb ($variant build, delayed completions)" "build/$variant/messenger" tests/http $DELAY
    else
        run_pytest "http tests, lmdb ($variant build)" "build/$variant/messenger" tests/http
    fi
done
run_pytest "security tests, lmdb (asan build, delayed completions)" build/asan/messenger tests/security $DELAY
# ThreadSanitizer: the whole HTTP suite (a race makes the server exit 66 at
# SIGTERM, which fails the test that stopped it). Suppressions, each with its
# reason: tests/tsan/suppressions.txt.
TSAN="TSAN_OPTIONS=suppressions=$PWD/tests/tsan/suppressions.txt MESSENGER_TEST_SANITIZER=thread"
run_pytest "http tests, lmdb (tsan build)" build/tsan/messenger tests/http $TSAN

# The parsers' fuzz corpora and every crash reproducer, replayed (seconds).
if [ -x tests/fuzz/replay.sh ]; then
    echo "== fuzz corpora replay (tests/fuzz/replay.sh)"
    out=$(tests/fuzz/replay.sh 2>&1)
    rc=$?
    printf '%s\n' "$out" | tail -n 20
    p=$(count passed "$(grep -E 'passed, [0-9]+ failed' <<<"$out" | tail -n 1)")
    f=$(count failed "$(grep -E 'passed, [0-9]+ failed' <<<"$out" | tail -n 1)")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then f=1; echo "the fuzz replay ran nothing: counted as a failure"; fi
    tally "fuzz corpora replay" "$p" "$f"
fi

echo "== web client in headless Chromium (tests/web/run.sh)"
out=$(MESSENGER_BIN="$PWD/build/release/messenger" tests/web/run.sh 2>&1)
rc=$?
printf '%s\n' "$out" | tail -n 25
p=$(grep -oE '^# pass [0-9]+' <<<"$out" | grep -oE '[0-9]+' | tail -n 1)
f=$(grep -oE '^# fail [0-9]+' <<<"$out" | grep -oE '[0-9]+' | tail -n 1)
p=${p:-0}
f=${f:-0}
if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then f=1; echo "the web test ran no test: counted as a failure"; fi
tally "web client e2e" "$p" "$f"

if [ "${MESSENGER_TEST_CASSANDRA:-1}" = 1 ]; then
    started_here=0
    scripts/cassandra status >/dev/null 2>&1 || started_here=1
    echo "== starting Cassandra (scripts/cassandra start)"
    if scripts/cassandra start; then
        echo "== lib/cql integration test"
        out=$(make --no-print-directory -C lib/cql BUILD="$PWD/build/cql" it 2>&1)
        rc=$?
        printf '%s\n' "$out" | tail -n 15
        p=$(count passed "$(tail -n 1 <<<"$out")")
        f=$(count failed "$(tail -n 1 <<<"$out")")
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
        tally "lib/cql integration" "$p" "$f"
        run_pytest "http tests, cassandra (release build)" build/release/messenger tests/http \
            MESSENGER_TEST_STORE=cassandra
        run_pytest "http tests, cassandra (asan build, delayed completions)" build/asan/messenger tests/http \
            MESSENGER_TEST_STORE=cassandra $DELAY
        run_pytest "security tests, cassandra (asan build, delayed completions)" build/asan/messenger \
            tests/security MESSENGER_TEST_STORE=cassandra $DELAY
        run_pytest "http tests, cassandra (tsan build)" build/tsan/messenger tests/http \
            MESSENGER_TEST_STORE=cassandra $TSAN
        run_pytest "cassandra compatibility and failover" build/release/messenger tests/cassandra
        [ "$started_here" = 1 ] && scripts/cassandra stop
    else
        echo "Cassandra did not start: the Cassandra tests cannot run"
        tally "cassandra start" 0 1
    fi
else
    echo "MESSENGER_TEST_CASSANDRA=0: the Cassandra tests were NOT run"
fi

if [ "${MESSENGER_TEST_CASSANDRA:-1}" = 1 ] && [ "${MESSENGER_TEST_CLUSTER:-1}" = 1 ]; then
    echo "== starting a 3-node Cassandra cluster (scripts/cassandra cluster start 3)"
    if scripts/cassandra cluster start 3; then
        rm -f tests/cluster/artifacts/cluster-report.*
        run_pytest "cassandra 3-node cluster under kill -9" build/release/messenger tests/cluster
        cat tests/cluster/artifacts/cluster-report.txt 2>/dev/null || true
    else
        echo "the cluster did not start: the cluster test cannot run"
        tally "cassandra cluster start" 0 1
    fi
    scripts/cassandra cluster stop
else
    echo "MESSENGER_TEST_CASSANDRA=0 or MESSENGER_TEST_CLUSTER=0: the cluster test was NOT run"
fi

if ((${#failures[@]})); then printf 'failed: %s\n' "${failures[@]}"; fi
echo "summary: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
