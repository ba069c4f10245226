"""The source tree's layers point one way (README, Architecture):
http -> api -> model/store/events/auth -> util, and lib/cql depends on
nothing of ours. Read from the #include lines, so a new dependency against
the grain fails here before anyone has to notice it in review."""
import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")

# What each folder of src/ may include besides itself. The top level
# (main.c, server.c, seed.c, config*.c) wires everything and may include all.
ALLOWED = {
    "util": set(),
    "model": {"util"},
    "auth": {"model", "util"},
    "events": {"model", "util"},
    "store": {"model", "util", "cql"},
    "http": {"util"},
    "api": {"http", "model", "store", "events", "auth", "util", "version"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def sources(folder):
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if f.endswith((".c", ".h")):
                yield os.path.join(dirpath, f)


def layer_of(include):
    """The layer an #include names: its first folder, or the file."""
    if "/" in include:
        return include.split("/")[0]
    if include in ("cql.h",):
        return "cql"
    return include[:-2] if include.endswith(".h") else include


def test_src_layers_point_one_way():
    bad = []
    for layer, allowed in ALLOWED.items():
        for path in sources(os.path.join(ROOT, "src", layer)):
            own_dir = os.path.dirname(path)
            for inc in INCLUDE.findall(open(path, encoding="utf-8").read()):
                if os.path.exists(os.path.join(own_dir, inc)) and "/" not in inc:
                    continue  # a private header beside the file
                target = layer_of(inc)
                if target != layer and target not in allowed:
                    bad.append(f"{os.path.relpath(path, ROOT)} includes {inc}")
    assert not bad, "\n".join(bad)


def test_lib_cql_depends_on_nothing_of_ours():
    bad = []
    cql = os.path.join(ROOT, "lib", "cql")
    for path in sources(cql):
        if os.sep + "tests" + os.sep in path:
            continue
        for inc in INCLUDE.findall(open(path, encoding="utf-8").read()):
            if not os.path.exists(os.path.join(os.path.dirname(path), inc)):
                bad.append(f"{os.path.relpath(path, ROOT)} includes {inc}")
    assert not bad, "\n".join(bad)


def test_the_product_does_not_carry_the_benchmark():
    """bench/ links against the library; nothing in src/ may include bench/."""
    for path in sources(os.path.join(ROOT, "src")):
        for inc in INCLUDE.findall(open(path, encoding="utf-8").read()):
            assert not inc.startswith("bench"), (path, inc)
