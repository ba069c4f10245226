"""The command line beside `serve`: --help, --version, bench-store, bad flags."""
import json
import subprocess

from conftest import MESSENGER_BIN, store_args


def run(*args, timeout=120):
    return subprocess.run([MESSENGER_BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


def test_help_lists_every_command_and_setting():
    p = run("--help")
    assert p.returncode == 0
    out = p.stdout.decode()
    for word in ["serve", "seed", "schema", "bench-store", "--listen", "--data-dir", "--store", "--log-level",
                 "--max-body-bytes", "--max-content-bytes", "--connection-memory", "--cassandra-hosts",
                 "MESSENGER_LISTEN", "MESSENGER_DATA_DIR", "MESSENGER_LOG_LEVEL", "CASSANDRA_KEYSPACE"]:
        assert word in out, word


def test_version():
    p = run("--version")
    assert p.returncode == 0 and p.stdout.decode().startswith("messenger ")


def test_bad_flags_exit_2_with_a_message():
    for args in (["--listen", "nowhere"], ["--bogus"], ["frobnicate"], ["--threads", "0"], ["--store", "mysql"]):
        p = run(*args)
        assert p.returncode == 2, args
        assert b"messenger:" in p.stderr, args


def test_bench_store_reports_both_scenarios(tmp_path):
    p = run("bench-store", *store_args(tmp_path / "bench"), "--duration", "1", "--concurrency", "4",
            "--log-level", "warn")
    assert p.returncode == 0, p.stderr.decode()
    lines = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert [x["scenario"] for x in lines] == ["page", "send"]
    for x in lines:
        assert x["ops"] > 0 and x["errors"] == 0 and x["p99_ms"] >= x["p50_ms"] >= 0
