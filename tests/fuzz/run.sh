#!/usr/bin/env bash
# tests/fuzz/run.sh HARNESS... - the fuzzing campaign behind `make fuzz`.
#
# Runs each harness for FUZZ_SECONDS (default 60), one process at a time (the
# machine is shared: two cores), from its corpus tests/fuzz/corpus/HARNESS
# (and tests/fuzz/dict/HARNESS.dict when present). New inputs go to a scratch
# folder; afterwards corpus and scratch are merged (-merge=1) into a minimal
# set that keeps all the coverage, which replaces the corpus: it stays small,
# at most FUZZ_CORPUS_MAX files (default 500; beyond, the largest go), and the
# hand-written seed-* files are always kept. A crash is left in
# build/fuzz/artifacts/HARNESS/ (it becomes a regression input in
# tests/fuzz/crashes/HARNESS/ once fixed). One line per harness is appended to
# build/fuzz/stats.tsv: seconds, executions, exec/s, cov, ft, corpus files,
# crashes. Exits non-zero when any harness crashed.
set -uo pipefail
cd "$(dirname "$0")/../.."

SECONDS_EACH="${FUZZ_SECONDS:-60}"
CORPUS_MAX="${FUZZ_CORPUS_MAX:-500}"
B=build/fuzz
STATS=$B/stats.tsv
mkdir -p "$B/logs"
[[ -f $STATS ]] || printf 'date\tharness\tseconds\texecs\texec_per_s\tcov\tft\tcorpus_files\tcrashes\n' > "$STATS"
crashed=0

# keep_small DIR: drops the largest non-seed files beyond CORPUS_MAX.
keep_small() {
    local dir=$1 n
    n=$(find "$dir" -type f | wc -l)
    ((n <= CORPUS_MAX)) && return
    find "$dir" -type f ! -name 'seed-*' -printf '%s %p\n' | sort -n | tail -n $((n - CORPUS_MAX)) |
        cut -d' ' -f2- | xargs -r rm -f
}

for h in "$@"; do
    bin=$B/$h corpus=tests/fuzz/corpus/$h work=$B/work/$h merged=$B/merged/$h
    art=$B/artifacts/$h log=$B/logs/$h.log
    [[ -x $bin ]] || { echo "fuzz: $bin not built" >&2; crashed=1; continue; }
    rm -rf "$work" "$merged"
    mkdir -p "$corpus" "$work" "$merged" "$art"
    dict=()
    [[ -f tests/fuzz/dict/$h.dict ]] && dict=(-dict="tests/fuzz/dict/$h.dict")
    echo "== $h: ${SECONDS_EACH}s (log: $log)"
    start=$(date +%s)
    "$bin" -max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -malloc_limit_mb=1024 -artifact_prefix="$art/" "${dict[@]}" "$work" "$corpus" > "$log" 2>&1
    rc=$?
    took=$(($(date +%s) - start))
    crashes=0
    if ((rc != 0)); then
        crashes=1
        crashed=1
        echo "   CRASH (exit $rc):"
        grep -E 'ERROR|SUMMARY|property violated|Test unit written' "$log" | head -n 6 | sed 's/^/   /'
    fi
    # A minimal set with all the coverage of corpus and scratch together.
    "$bin" -merge=1 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 "$merged" "$corpus" "$work" \
        > "$B/logs/$h.merge.log" 2>&1
    if [[ -n "$(ls -A "$merged")" ]]; then
        find "$corpus" -type f ! -name 'seed-*' -delete
        cp -n "$merged"/* "$corpus"/ 2>/dev/null
        keep_small "$corpus"
    fi
    line=$(grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -n 1)
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$line")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$line")
    execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log")
    eps=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+)/\1/p' "$log")
    files=$(find "$corpus" -type f | wc -l)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$h" "$took" "${execs:-?}" \
        "${eps:-?}" "${cov:-?}" "${ft:-?}" "$files" "$crashes" >> "$STATS"
    echo "   ${took}s, ${execs:-?} runs, ${eps:-?} exec/s, cov ${cov:-?}, ft ${ft:-?}, corpus $files files, crashes $crashes"
done
exit $crashed
