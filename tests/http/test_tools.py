"""The command line beside `serve`: --help, --version, config, bad flags, and
messenger-bench-store (built beside the server)."""
import json
import os
import re
import subprocess
from urllib.parse import quote

import pytest

from support.checks import derive_conversation_id
from support.env import CASSANDRA, MESSENGER_BIN
from support.server import ServerProcess, run_seed
from support.store import store_args


# The store benchmark is its own program, beside the server's binary.
BENCH_STORE_BIN = os.path.join(os.path.dirname(MESSENGER_BIN), "messenger-bench-store")
README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def run(*args, timeout=120, env=None):
    return subprocess.run([MESSENGER_BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          env=env)


def run_bench(*args, timeout=120):
    return subprocess.run([BENCH_STORE_BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout)


def test_help_lists_every_command_and_setting():
    p = run("--help")
    assert p.returncode == 0
    out = p.stdout.decode()
    for word in ["serve", "seed", "schema", "config", "--listen", "--data-dir", "--store", "--log-level",
                 "--max-body-bytes", "--max-content-bytes", "--connection-memory", "--cassandra-hosts",
                 "MESSENGER_LISTEN", "MESSENGER_DATA_DIR", "MESSENGER_LOG_LEVEL", "CASSANDRA_KEYSPACE"]:
        assert word in out, word
    # Every setting of the table is in --help, with its variable.
    for row in config_rows(clean_env()):
        assert f"--{row['setting']} " in out, row
        if row["environment"] != "-":
            assert f"[{row['environment']}]" in out, row
    # The benchmark is not a command of the product any more.
    assert "bench-store" not in out and "--concurrency" not in out


def test_bench_store_help_lists_its_options_and_the_stores():
    p = run_bench("--help")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    for word in ["--concurrency", "--duration", "--scenario", "--requests", "--store", "--data-dir",
                 "--cassandra-hosts", "CASSANDRA_KEYSPACE"]:
        assert word in out, word
    for args in (["--concurrency", "0"], ["--scenario", "both"], ["--requests", ""], ["serve"]):
        p = run_bench(*args)
        assert p.returncode == 2 and b"messenger:" in p.stderr, (args, p.stderr)
    p = run("bench-store")
    assert p.returncode == 2 and b"unknown command" in p.stderr


# ---- messenger config: the table of settings, as an operator sees it ----

def clean_env(**extra):
    """The environment without any variable a setting reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESSENGER_", "CASSANDRA_"))}
    env.update(extra)
    return env


def config_rows(env, *args):
    p = run("config", *args, env=env)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    header = lines[0].split("\t")
    assert header == ["setting", "value", "origin", "environment", "default"], header
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
    assert all(len(r) == 5 for r in rows), rows
    return rows


def test_config_shows_each_value_and_where_it_came_from():
    env = clean_env(MESSENGER_LOGIN_WINDOW="77", MESSENGER_THREADS="5", CASSANDRA_HOST="10.1.2.3",
                    CASSANDRA_PORT="9999", MESSENGER_BROKER="redis://alice:s3cret@127.0.0.1:6379")
    rows = {r["setting"]: r for r in config_rows(env, "--threads", "3", "--no-schema", "--store=cassandra")}
    assert rows["threads"]["value"] == "3" and rows["threads"]["origin"] == "flag"  # flags win
    assert rows["login-window"]["value"] == "77" and rows["login-window"]["origin"] == "environment"
    assert rows["cassandra-hosts"]["value"] == "10.1.2.3:9999"
    assert rows["cassandra-hosts"]["origin"] == "environment"
    assert rows["cassandra-schema"]["value"] == "off" and rows["cassandra-schema"]["origin"] == "flag"
    assert rows["store"]["value"] == "cassandra"
    assert rows["listen"]["value"] == "127.0.0.1:8000" and rows["listen"]["origin"] == "default"
    # A password never reaches a dump of the configuration.
    assert "s3cret" not in json.dumps(rows) and rows["broker"]["value"] == "redis://***@127.0.0.1:6379"
    # Every default is the value when nothing is set (but the computed one).
    for r in config_rows(clean_env()):
        assert r["origin"] == "default", r
        if r["default"] not in ("CPU count",):
            assert r["value"] == r["default"], r
    # The environment's value is checked like a flag's.
    p = run("config", env=clean_env(MESSENGER_IDLE_TIMEOUT="0"))
    assert p.returncode == 2 and b"MESSENGER_IDLE_TIMEOUT" in p.stderr


def readme_settings():
    """The README's configuration table: {setting: (variable, default)}."""
    text = open(README, encoding="utf-8").read()
    section = text[text.index("\n## Configuration"):]
    section = section[:section.index("\n## ", 1)]
    rows = {}
    for line in section.splitlines():
        line = line.replace("\\|", "/")  # an escaped bar inside a cell
        m = re.match(r"\| `--([a-z0-9-]+)[^|]*\| ([^|]*)\| ([^|]*)\|", line)
        if m:
            env = re.findall(r"`([A-Z0-9_]+)`", m.group(2))
            rows[m.group(1)] = (env[0] if env else "-", m.group(3).strip().strip("`"))
    return rows


def test_readme_configuration_table_is_the_settings_table():
    readme = readme_settings()
    table = {r["setting"]: (r["environment"], r["default"]) for r in config_rows(clean_env())}
    assert set(readme) == set(table), (set(readme) ^ set(table))
    for name, (env, default) in table.items():
        assert readme[name] == (env, default), (name, readme[name], (env, default))


def test_version():
    p = run("--version")
    assert p.returncode == 0 and p.stdout.decode().startswith("messenger ")


def test_bad_flags_exit_2_with_a_message():
    for args in (["--listen", "nowhere"], ["--bogus"], ["frobnicate"], ["--threads", "0"], ["--store", "mysql"]):
        p = run(*args)
        assert p.returncode == 2, args
        assert b"messenger:" in p.stderr, args


def test_bench_store_reports_both_scenarios(tmp_path):
    p = run_bench(*store_args(tmp_path / "bench"), "--duration", "1", "--concurrency", "4",
                  "--log-level", "warn")
    assert p.returncode == 0, p.stderr.decode()
    lines = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert [x["scenario"] for x in lines] == ["page", "send"]
    for x in lines:
        assert x["ops"] > 0 and x["errors"] == 0 and x["p99_ms"] >= x["p50_ms"] >= 0
        assert x["requests"] is None  # its own two users, no request file


# ---- bench-store --requests FILE: the operations of an HTTP request file ----

@pytest.fixture(scope="module")
def seeded(_module_tmp):
    """A store written by `messenger seed` (stopped again), with real ids read
    over HTTP: users, conversations, and a cursor of the alice-bob conversation."""
    data_dir = _module_tmp / "bench-seeded"
    data_dir.mkdir()
    run_seed(data_dir)
    srv = ServerProcess(data_dir, log_dir=_module_tmp).start()
    try:
        c = srv.client()
        ids = {}
        for name in ("alice", "bob", "carol"):
            status, body, _ = c.call("GET", f"/api/users?username={quote(name)}")
            assert status == 200, (name, status, body)
            ids[name] = body["user_id"]
        status, convs, _ = c.call("GET", f"/api/conversations/user/{ids['alice']}?limit=100")
        assert status == 200 and convs["data"], convs
        conv_ids = [x["conversation_id"] for x in convs["data"]]
        ab = derive_conversation_id(ids["alice"], ids["bob"])
        assert ab in conv_ids, (ab, conv_ids)
        first = c.messages_page(ab, limit=20)
        assert first["next_cursor"], first
        c.close()
    finally:
        srv.stop_and_check()
    return {"dir": data_dir, "ids": ids, "convs": conv_ids, "ab": ab, "cursor": first["next_cursor"]}


def bench(data_dir, requests, *extra):
    return run_bench(*store_args(data_dir), "--duration", "1", "--concurrency", "4",
                     "--log-level", "warn", "--requests", str(requests), *extra)


def one_result(p):
    assert p.returncode == 0, p.stderr.decode()
    lines = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert len(lines) == 1, lines
    return lines[0]


def test_bench_store_requests_page(seeded, tmp_path):
    f = tmp_path / "page_mix.txt"
    lines = [f"GET /api/messages/conversation/{cid}?limit=20" for cid in seeded["convs"]]
    lines += [f"GET /api/messages/conversation/{seeded['ab']}?limit=20&before_message_id={seeded['cursor']}",
              f"GET /api/messages/conversation/{seeded['ab']}/before?limit=5&before_message_id={seeded['cursor']}",
              f"GET /api/messages/conversation/{seeded['ab']}"]
    f.write_text("\n".join(lines) + "\n")
    x = one_result(bench(seeded["dir"], f))  # no --scenario: the file's kind
    assert x["scenario"] == "page" and x["requests"] == "page_mix.txt", x
    assert x["ops"] > 0 and x["errors"] == 0 and x["p99_ms"] >= x["p50_ms"] >= 0, x
    x = one_result(bench(seeded["dir"], f, "--scenario", "page"))
    assert x["scenario"] == "page" and x["ops"] > 0 and x["errors"] == 0, x


def test_bench_store_requests_send_writes_those_messages(seeded, tmp_path):
    ids = seeded["ids"]
    f = tmp_path / "send.txt"
    tag = "bench-store-requests"
    bodies = [{"sender_id": ids["alice"], "receiver_id": ids["bob"], "content": f"{tag} 1"},
              {"sender_id": ids["bob"], "receiver_id": ids["alice"], "content": f"{tag} 2 \u00e9\u4e16"}]
    f.write_text("".join(f"POST /api/messages/ {json.dumps(b)}\n" for b in bodies))
    x = one_result(bench(seeded["dir"], f, "--scenario", "send"))
    assert x["scenario"] == "send" and x["requests"] == "send.txt", x
    assert x["ops"] > 0 and x["errors"] == 0, x
    # The sends went where the lines said: the alice-bob conversation.
    srv = ServerProcess(seeded["dir"], log_dir=tmp_path).start()
    try:
        c = srv.client()
        page = c.messages_page(seeded["ab"], limit=20)
        c.close()
    finally:
        srv.stop_and_check()
    assert {m["content"] for m in page["data"]} <= {b["content"] for b in bodies}, page["data"][:3]
    assert {(m["sender_id"], m["receiver_id"]) for m in page["data"]} <= {(ids["alice"], ids["bob"]),
                                                                       (ids["bob"], ids["alice"])}


def expect_failure(p, *words):
    assert p.returncode != 0
    assert p.stdout == b"", p.stdout  # no result line
    err = p.stderr.decode()
    assert "messenger: bench-store:" in err, err
    for w in words:
        assert w in err, (w, err)
    return err


def test_bench_store_requests_errors(seeded, tmp_path):
    ab, cursor, ids = seeded["ab"], seeded["cursor"], seeded["ids"]
    page = f"GET /api/messages/conversation/{ab}?limit=20"
    send = "POST /api/messages/ " + json.dumps({"sender_id": ids["alice"], "receiver_id": ids["bob"],
                                                "content": "x"})
    unused = tmp_path / "never-opened"   # the file is checked before the store is opened
    expect_failure(bench(unused, tmp_path / "missing.txt"), "missing.txt", "No such file")
    cases = {
        "not a request": ([page, "HEAD /health"], ":2:"),
        "bad conversation id": ([page, "GET /api/messages/conversation/not-a-uuid?limit=20"], ":2:"),
        "limit out of range": ([page, page.replace("limit=20", "limit=101")], ":2:"),
        "zero limit": ([page.replace("limit=20", "limit=0")], ":1:"),
        "other parameter": ([page + "&after_message_id=" + cursor], ":1:"),
        "cursor not a message id": ([page + "&before_message_id=" + ab], ":1:"),
        "other path": (["GET /api/conversations/user/" + ids["alice"]], ":1:"),
        "body not JSON": ([send, send, "POST /api/messages/ {oops"], ":3:"),
        "field missing": (["POST /api/messages/ " + json.dumps({"sender_id": ids["alice"], "content": "x"})], ":1:"),
        "sender is receiver": (["POST /api/messages/ " + json.dumps(
            {"sender_id": ids["alice"], "receiver_id": ids["alice"], "content": "x"})], ":1:"),
        "page and send mixed": ([page, page, send], ":3:"),
        "too long": ([page, "GET /" + "a" * (64 * 1024 + 1)], ":2:"),
    }
    for name, (lines, where) in cases.items():
        f = tmp_path / "bad.txt"
        f.write_text("\n".join(lines) + "\n")
        expect_failure(bench(unused, f), "bad.txt" + where)
    f = tmp_path / "empty.txt"
    f.write_text("\n")
    expect_failure(bench(unused, f), "no requests")
    # A file whose lines do not match --scenario.
    f = tmp_path / "pages.txt"
    f.write_text(page + "\n")
    expect_failure(bench(unused, f, "--scenario", "send"), "pages.txt:1:", "--scenario send")
    f = tmp_path / "sends.txt"
    f.write_text(send + "\n")
    expect_failure(bench(unused, f, "--scenario", "page"), "sends.txt:1:", "--scenario page")
    if not CASSANDRA:
        assert not unused.exists()


def test_bench_store_requests_counts_store_errors(seeded, tmp_path):
    """A line naming a conversation that does not exist is a valid request:
    it runs, and every operation is an error (404 through HTTP)."""
    f = tmp_path / "nowhere.txt"
    f.write_text("GET /api/messages/conversation/00000000-0000-4000-8000-000000000001?limit=20\n")
    x = one_result(bench(seeded["dir"], f))
    assert x["ops"] > 0 and x["errors"] >= x["ops"], x
