# messenger - build, run and test.
#
#   make run     install missing Debian packages, build, serve on 127.0.0.1:8000
#   make run-cassandra   the same on a real local Cassandra (scripts/cassandra)
#   make test    install, build, run every test (also under ASan+UBSan)
#   make test-cluster   a local 3-node Cassandra cluster under kill -9 (tests/cluster)
#   make bench   benchmarks (bench/README.md)
#   make         build build/messenger
#
# VARIANT=release (default), VARIANT=asan (ASan+UBSan) or VARIANT=tsan
# (ThreadSanitizer) picks the flags and the folder under build/ that objects
# and binaries go to. The two sanitizer builds are test builds: they define
# MESSENGER_TEST_HOOKS (MESSENGER_TEST_DELAY, src/store/store.c; answering a
# request twice or never aborts, src/http/http_server.c).

VARIANT ?= release
B := build/$(VARIANT)
CC ?= cc
PKGS := libmicrohttpd lmdb jansson libcrypto libargon2 hiredis zlib

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

ifeq ($(VARIANT),asan)
  VFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all \
            -DMESSENGER_TEST_HOOKS
else ifeq ($(VARIANT),tsan)
  VFLAGS := -O1 -g -fsanitize=thread -fno-omit-frame-pointer -DMESSENGER_TEST_HOOKS
else
  VFLAGS := -O2 -g
endif

CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
          -Isrc -Ilib/cql $(PKG_CFLAGS) $(VFLAGS) $(EXTRA_CFLAGS)
LDLIBS := $(PKG_LIBS) -lpthread

SRCS := $(shell find src -name '*.c' ! -name main.c | sort)
# Our CQL client library (lib/cql, its own Makefile for standalone use),
# compiled into the same archive with the same variant flags.
CQL_SRCS := $(filter-out %/tests/%,$(wildcard lib/cql/*.c))
OBJS := $(SRCS:src/%.c=$(B)/obj/%.o) $(CQL_SRCS:lib/cql/%.c=$(B)/obj/cql/%.o) $(B)/obj/api/openapi_blob.o
LIB := $(B)/libmessenger.a
BIN := $(B)/messenger
# The store benchmark is a program of its own beside the server (bench/).
BENCH_STORE := $(B)/messenger-bench-store

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(B)/tests/%)

.PHONY: all build deps run run-cassandra test test-cluster unit bench bench-json clean
all: build
build: $(BIN) build/messenger $(BENCH_STORE)

build/messenger: $(BIN)
	@if [ "$(VARIANT)" = release ]; then cp $(BIN) $@.tmp && mv -f $@.tmp $@; fi

$(B)/obj/%.o: src/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(B)/obj/cql/%.o: lib/cql/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Wmissing-prototypes -Wno-missing-field-initializers -MMD -MP -c $< -o $@

$(B)/obj/api/openapi_blob.o: src/api/openapi_blob.S src/api/openapi.json
	@mkdir -p $(@D)
	$(CC) -c -Wa,-I,src/api $< -o $@

$(LIB): $(OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(B)/obj/main.o $(LIB)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BENCH_STORE): bench/bench_store.c $(LIB)
	$(CC) $(CFLAGS) $< -o $@ $(LIB) $(LDLIBS)

$(B)/tests/%: tests/unit/%.c $(LIB) tests/unit/unit.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Itests/unit $< -o $@ $(LIB) $(LDLIBS) -lcmocka

unit: $(UNIT_BINS)

deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory build
	./build/messenger serve $(ARGS)

# A real single-node Cassandra (scripts/cassandra), then the API on it.
run-cassandra: deps
	@$(MAKE) --no-print-directory build
	scripts/cassandra start
	./build/messenger serve --store cassandra $(ARGS)

# Re-enter make after deps so that pkg-config sees the installed packages.
CQL_TESTS := test_proto test_client
CQL_TEST_BINS := $(CQL_TESTS:%=$(CURDIR)/build/cql/%) $(CQL_TESTS:%=$(CURDIR)/build/cql/asan/%)

test: deps
	@$(MAKE) --no-print-directory build unit
	@$(MAKE) --no-print-directory VARIANT=asan build unit
	@$(MAKE) --no-print-directory VARIANT=tsan build
	@$(MAKE) --no-print-directory -C lib/cql BUILD=$(CURDIR)/build/cql $(CQL_TEST_BINS)
	@scripts/test.sh

# A local 3-node Cassandra cluster (scripts/cassandra cluster, beside the
# single node), the cluster test on it (tests/cluster: 16 senders, kill -9 of
# a node, its restart, kill -9 of the first contact point), the cluster
# stopped whatever the outcome. Report: tests/cluster/artifacts/.
test-cluster: deps
	@$(MAKE) --no-print-directory build
	@scripts/cassandra cluster start 3 || { scripts/cassandra cluster stop; exit 1; }
	@MESSENGER_BIN=$(CURDIR)/build/release/messenger python3 -m pytest -s -v -p no:cacheprovider tests/cluster; \
	  rc=$$?; scripts/cassandra cluster stop; exit $$rc

# Benchmarks: seeds a data set, drives the server with wrk, prints a table.
bench: deps
	@$(MAKE) --no-print-directory build
	@bench/run.sh

# Hand-written JSON output versus jansson, on one page of 20 messages.
$(B)/bench_json: bench/json_render.c $(LIB)
	$(CC) $(CFLAGS) $< -o $@ $(LIB) $(LDLIBS)

bench-json: $(B)/bench_json
	$(B)/bench_json

clean:
	rm -rf build

# libFuzzer harnesses (make fuzz; make test replays their corpora).
-include tests/fuzz/fuzz.mk

-include $(shell find build -name '*.d' 2>/dev/null)
