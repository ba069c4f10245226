# tests/fuzz/fuzz.mk - libFuzzer harnesses (included by the Makefile).
#
#   make fuzz-build            build every harness into build/fuzz/
#   make fuzz [FUZZ_SECONDS=60] [FUZZ_ONLY="fuzz_cql ..."]
#                              fuzz each harness in turn (one process at a
#                              time), merging new coverage into its corpus
#   make fuzz-replay           run every corpus and reproducer once (what
#                              make test does through tests/fuzz/replay.sh)
#
# The project's sources (src/, lib/cql/) are compiled again with clang and
# coverage instrumentation into one archive; each harness links only what it
# uses from it. tests/fuzz/README.md says what each harness covers.

FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FZ_DIR := build/fuzz
FZ_HARNESSES := fuzz_input fuzz_router fuzz_cql fuzz_broker fuzz_wal
FZ_BINS := $(FZ_HARNESSES:%=$(FZ_DIR)/%)

# Sanitizers abort on the first report (UBSan included), so that libFuzzer
# sees every finding as a crash with a reproducer.
FZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FZ_BASE := -std=c11 -D_GNU_SOURCE -O1 -g -Isrc -Ilib/cql $(PKG_CFLAGS) $(FZ_SAN)
# The project's sources: warnings on, but not fatal, so that a warning only
# clang gives (the project builds with gcc) cannot stop make test's replay.
FZ_SRC_CFLAGS := $(FZ_BASE) -Wall -Wextra -fsanitize=fuzzer-no-link
# Our harnesses: the project's rules.
FZ_CFLAGS := $(FZ_BASE) -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -I$(FZ_DIR)

FZ_OBJS := $(SRCS:src/%.c=$(FZ_DIR)/obj/%.o) $(CQL_SRCS:lib/cql/%.c=$(FZ_DIR)/obj/cql/%.o) \
           $(FZ_DIR)/obj/api/openapi_blob.o
FZ_LIB := $(FZ_DIR)/libfuzzsrc.a

.PHONY: fuzz fuzz-build fuzz-replay

$(FZ_DIR)/obj/%.o: src/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FZ_SRC_CFLAGS) -MMD -MP -c $< -o $@

$(FZ_DIR)/obj/cql/%.o: lib/cql/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FZ_SRC_CFLAGS) -MMD -MP -c $< -o $@

# The embedded OpenAPI document (src/api/service.c serves it), as the
# Makefile builds it.
$(FZ_DIR)/obj/api/openapi_blob.o: src/api/openapi_blob.S src/api/openapi.json
	@mkdir -p $(@D)
	$(FUZZ_CC) -c -Wa,-I,src/api $< -o $@

$(FZ_LIB): $(FZ_OBJS)
	@rm -f $@
	ar rcs $@ $^

# The route table of src/api/routes.c as data, regenerated whenever that file
# changes, so that the router harness matches against the real patterns.
$(FZ_DIR)/routes_table.h: src/api/routes.c
	@mkdir -p $(@D)
	grep -oE '^[[:space:]]*\{"[A-Z]+", "[^"]*"' $< | sed -E 's/^[[:space:]]*(.*)$$/\1, FUZZ_HANDLER},/' > $@.tmp
	@test -s $@.tmp || { echo "no routes found in $<" >&2; rm -f $@.tmp; exit 1; }
	mv -f $@.tmp $@

$(FZ_DIR)/fuzz_router: $(FZ_DIR)/routes_table.h

$(FZ_DIR)/%: tests/fuzz/%.c tests/fuzz/fuzz_common.h $(FZ_LIB)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FZ_CFLAGS) -fsanitize=fuzzer $< -o $@ $(FZ_LIB) $(PKG_LIBS) -lpthread

fuzz-build: $(FZ_BINS)

fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh $(or $(FUZZ_ONLY),$(FZ_HARNESSES))

fuzz-replay: fuzz-build
	@tests/fuzz/replay.sh --no-build
