# The two commands of the README:
#   make run    builds and runs the main job: fabric-debug on this machine, engine vs raw
#               provider, over the best provider present (results table on stdout)
#   make test   builds and runs every test: normal build, ASan+UBSan build, TSan on the
#               threaded tests, each against Debian's libfabric (1.17) and against
#               libfabric 2.x (scripts/libfabric2.sh builds it once into a cache).
#               GPU tests skip where there is no GPU; after each ctest run the skipped
#               tests are listed with their reasons.
# Both install missing Debian packages first (scripts/install-deps.sh).
BUILD ?= build
JOBS ?= $(shell nproc)
# Debian's interpreter: python3-dev, pytest and numpy come from apt (scripts/install-deps.sh);
# a python3 earlier on PATH (pyenv, conda) may lack them.
PYTHON ?= /usr/bin/python3
CMAKE_ARGS ?=
CMAKE_COMMON = -DPython3_EXECUTABLE=$(PYTHON) $(CMAKE_ARGS)
CTEST = ctest --output-on-failure --no-tests=error
# Printed before each run's tests: the libfabric the tests load (unit.fabric_version).
SAY_FABRIC = bin/unit_fabric_version | grep '^libfabric:'
# ctest prints a skipped test's output only with -V: each run writes a JUnit file and
# scripts/ctest_skips.py prints why each skipped test (GPU, netns, ...) was skipped.
define ctest_run
$(CTEST) --output-junit ctest-junit.xml $(1); rc=$$?; \
  $(PYTHON) $(CURDIR)/scripts/ctest_skips.py ctest-junit.xml; exit $$rc
endef

.PHONY: all deps build run test test-plain test-asan test-tsan test-lf2 test-lf2-plain \
	test-lf2-asan test-lf2-tsan clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_COMMON)
	cmake --build $(BUILD) -j$(JOBS)

run: build
	$(BUILD)/bin/fabric-debug local --provider auto --quick --reps 3

test: test-plain test-asan test-tsan test-lf2

test-plain: build
	cd $(BUILD) && $(SAY_FABRIC) && $(PLAIN_CTEST)

PLAIN_CTEST = $(call ctest_run,-j$(JOBS))
# The three runs, each parameterised by a build-dir suffix and extra cmake arguments, so
# the libfabric 2.x runs below are the same runs, not copies of them.
ASAN_CMAKE = -DCMAKE_BUILD_TYPE=Debug -DTENDRIL_CUDA=OFF -DTENDRIL_SANITIZE=address,undefined
# $(call ASAN_CTEST,LSAN-SUPPRESSIONS-FILE)
ASAN_CTEST = export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  LSAN_OPTIONS=suppressions=$(1) && \
  $(call ctest_run,-j$(JOBS) -LE 'gpu|python')
TSAN_CMAKE = -DCMAKE_BUILD_TYPE=Debug -DTENDRIL_CUDA=OFF -DTENDRIL_SANITIZE=thread
# $(call TSAN_CTEST,SUPPRESSIONS-FILE)
# history_size=7 (the largest): a suppression matches a race only if TSan can restore the
# earlier access's stack; with the default history, long a2a_proxy runs lost it at times
# ("failed to restore the stack") and a suppressed cross-process race failed the run.
TSAN_CTEST = export TSAN_OPTIONS="halt_on_error=1 history_size=7 suppressions=$(1)" && \
  $(call ctest_run,-j$(JOBS) -L threads)

test-asan: deps
	cmake -S . -B $(BUILD)-asan $(ASAN_CMAKE) $(CMAKE_COMMON)
	cmake --build $(BUILD)-asan -j$(JOBS)
	cat tests/lsan.supp tests/lsan-system.supp > $(BUILD)-asan/lsan.supp
	cd $(BUILD)-asan && $(SAY_FABRIC) && $(call ASAN_CTEST,$(abspath $(BUILD)-asan)/lsan.supp)

test-tsan: deps
	cmake -S . -B $(BUILD)-tsan $(TSAN_CMAKE) $(CMAKE_COMMON)
	cmake --build $(BUILD)-tsan -j$(JOBS)
	cd $(BUILD)-tsan && $(SAY_FABRIC) && $(call TSAN_CTEST,$(CURDIR)/tests/tsan.supp)

# libfabric 2.x: scripts/libfabric2.sh prints its cached prefix (building it the first
# time, ~1 min). The tests link it through RUNPATH; LD_LIBRARY_PATH makes the Python
# interpreter's extension and the installed consumer (install.consumer) load it too.
# unit.fabric_version prints the libfabric each run loaded and fails on a mismatch.
# CUDA code is not built again: the 2.x plain build covers the host code and Python.
#   $(call lf2_run,SUFFIX,CMAKE-ARGS,CTEST-COMMAND)
define lf2_run
	lf2=$$(scripts/libfabric2.sh) && \
	cmake -S . -B $(BUILD)-lf2$(1) $(2) -DCMAKE_PREFIX_PATH=$$lf2 $(CMAKE_COMMON) && \
	cmake --build $(BUILD)-lf2$(1) -j$(JOBS) && \
	cd $(BUILD)-lf2$(1) && export LD_LIBRARY_PATH=$$lf2/lib$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH} && \
	$(SAY_FABRIC) && $(3)
endef

test-lf2: test-lf2-plain test-lf2-asan test-lf2-tsan

test-lf2-plain: deps
	$(call lf2_run,,-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTENDRIL_CUDA=OFF,$(PLAIN_CTEST))

test-lf2-asan: deps
	$(call lf2_run,-asan,$(ASAN_CMAKE),$(call ASAN_CTEST,$(CURDIR)/tests/lsan.supp))

# TSan against 2.x adds tests/tsan-lf2.supp (why: that file) to the common suppressions.
test-lf2-tsan: deps
	mkdir -p $(BUILD)-lf2-tsan
	cat tests/tsan.supp tests/tsan-lf2.supp > $(BUILD)-lf2-tsan/tsan.supp
	$(call lf2_run,-tsan,$(TSAN_CMAKE),$(call TSAN_CTEST,$(abspath $(BUILD)-lf2-tsan)/tsan.supp))

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-tsan $(BUILD)-lf2 $(BUILD)-lf2-asan $(BUILD)-lf2-tsan
