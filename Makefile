# The two commands of the README:
#   make run    builds and runs the main job: fabric-debug on this machine, engine vs raw
#               provider, over the best provider present (results table on stdout)
#   make test   builds and runs every test: normal build, ASan+UBSan build, TSan on the
#               threaded tests. GPU tests skip with a message where there is no GPU.
# Both install missing Debian packages first (scripts/install-deps.sh).
BUILD ?= build
JOBS ?= $(shell nproc)
# Debian's interpreter: python3-dev, pytest and numpy come from apt (scripts/install-deps.sh);
# a python3 earlier on PATH (pyenv, conda) may lack them.
PYTHON ?= /usr/bin/python3
CMAKE_ARGS ?=
CMAKE_COMMON = -DPython3_EXECUTABLE=$(PYTHON) $(CMAKE_ARGS)
CTEST = ctest --output-on-failure --no-tests=error

.PHONY: all deps build run test test-plain test-asan test-tsan clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_COMMON)
	cmake --build $(BUILD) -j$(JOBS)

run: build
	$(BUILD)/bin/fabric-debug local --provider auto --quick --reps 3

test: test-plain test-asan test-tsan

test-plain: build
	cd $(BUILD) && $(CTEST) -j$(JOBS)

test-asan: deps
	cmake -S . -B $(BUILD)-asan -DCMAKE_BUILD_TYPE=Debug -DTENDRIL_CUDA=OFF \
	  -DTENDRIL_SANITIZE=address,undefined $(CMAKE_COMMON)
	cmake --build $(BUILD)-asan -j$(JOBS)
	cd $(BUILD)-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(CTEST) -j$(JOBS) -LE 'gpu|python'

test-tsan: deps
	cmake -S . -B $(BUILD)-tsan -DCMAKE_BUILD_TYPE=Debug -DTENDRIL_CUDA=OFF \
	  -DTENDRIL_SANITIZE=thread $(CMAKE_COMMON)
	cmake --build $(BUILD)-tsan -j$(JOBS)
	cd $(BUILD)-tsan && TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" $(CTEST) -j$(JOBS) -L threads

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-tsan
