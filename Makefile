# dhaf: thin wrappers around scripts/, cmake and ctest. Nothing is built here directly.
MAKEFLAGS += --no-print-directory
BUILD     ?= build
ASAN_DIR  ?= build-asan
FUZZ_DIR  ?= build-fuzz
FUZZ_SECONDS ?= 60
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_ARGS ?= --output-on-failure

SOURCES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)

ROUNDS    ?= 10
SOAK      ?= 0
SEED      ?=

.PHONY: all deps build check asan format lint docs bench demo clean help fuzz chaos deb

all: build

help:
	@echo "make deps    install the Debian packages dhaf needs (scripts/install-deps.sh)"
	@echo "make build   configure and build into $(BUILD)/ (binaries in $(BUILD)/bin)"
	@echo "make check   deps + build + every test (ctest)"
	@echo "make install binaries, systemd units, docs, examples into DESTDIR/PREFIX (/usr/local)"
	@echo "make deb     Debian packages dhaf-node, dhaf-prober, dhafctl, dhaf-common into $(BUILD)/deb/"
	@echo "make asan    the same tests under AddressSanitizer + UBSan, in $(ASAN_DIR)/"
	@echo "make format  clang-format every C file in place"
	@echo "make lint    clang-format check + cppcheck"
	@echo "make bench   run the benchmarks (figures only; bench/README.md)"
	@echo "make fuzz    build the libFuzzer targets (clang) in $(FUZZ_DIR)/, run each FUZZ_SECONDS (fuzz/README.md)"
	@echo "make chaos   3 etcd members, 3 nodes, 2 probers under random faults, invariants checked (ROUNDS=10, SEED=, SOAK=seconds; root)"
	@echo "make docs    regenerate the generated parts of docs/ (config reference)"
	@echo "make demo    etcd, 3 nodes, a prober and a timed failover story on loopback (Ctrl-C stops)"

deps:
	@bash scripts/install-deps.sh

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

check: deps build
	@cd $(BUILD) && ctest $(CTEST_ARGS) -j $(JOBS)

asan: deps
	@cmake -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DDHAF_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_DIR) -j $(JOBS)
	@cd $(ASAN_DIR) && ctest $(CTEST_ARGS) -j $(JOBS) -LE deploy

format:
	@clang-format -i $(SOURCES)

lint:
	@clang-format --dry-run -Werror $(SOURCES)
	@cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --inline-suppr --suppress=missingIncludeSystem -I lib/include -I providers/include \
	  lib providers node prober ctl sim fuzz

bench: build
	@BUILD=$(BUILD) bash bench/run.sh
	@/usr/bin/python3 bench/election.py $(BUILD)/bin

# libFuzzer targets (fuzz/*.c) built by clang with ASan + UBSan in $(FUZZ_DIR)/, each run for
# FUZZ_SECONDS on a copy of its seed corpus; fails on a crash or leak and names the input.
fuzz: deps
	@cmake -S . -B $(FUZZ_DIR) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DDHAF_FUZZ=ON -DDHAF_TESTS=OFF -DDHAF_BENCH=OFF >/dev/null
	@cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzz_all
	@bash fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SECONDS)

# The fault campaign (tests/chaos/chaos.py, docs/chaos.md): network namespaces, so root.
# ROUNDS rounds of random faults from SEED (printed; random when empty), or SOAK seconds.
chaos: deps build
	@/usr/bin/python3 tests/chaos/chaos.py $(BUILD)/bin --rounds $(ROUNDS) \
	  $(if $(SEED),--seed $(SEED)) $(if $(filter-out 0,$(SOAK)),--soak $(SOAK) --out chaos-soak)

# Debian packages from $(BUILD) (deploy/deb/cpack.cmake; docs/deploy.md "Debian packages").
deb: deps build
	@rm -f $(BUILD)/deb/*.deb
	@cd $(BUILD) && cpack -G DEB >/dev/null
	@ls -1 $(BUILD)/deb/*.deb

docs: build
	@bash scripts/gen-config-doc.sh $(BUILD)/bin/dhaf-node

# etcd, 3 nodes, a remote prober, 2 backends and an exec switcher on loopback, in a temp dir;
# a timed story (failover, switching back, switchover, purge), then live until Ctrl-C.
demo: deps build
	@/usr/bin/python3 scripts/demo.py --bin $(BUILD)/bin

clean:
	rm -rf $(BUILD) $(ASAN_DIR) $(FUZZ_DIR)

# Binaries, systemd units, the sysusers.d file, docs and example configs under $(DESTDIR)$(PREFIX)
# (docs/deploy.md). Builds $(BUILD) first: configures it only if it was never configured, so
# an existing tree (and its build type) is installed as it is.
PREFIX  ?= /usr/local
DESTDIR ?=
.PHONY: install
install:
	@test -f $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"
