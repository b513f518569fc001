# make serve   install, then make the demo dataset, model and index if missing and serve on :8000
# make test    install, then lint (ruff), type-check (mypy) and run the test suite
# make test-slow  the slow tests (real Milvus server, Ray cluster, load run, browser tests of the builder); CI runs them too
# make install virtualenv in $(VENV) with the pinned torch first, then this package, every version from
#              requirements.lock; Debian's chromium and strace for the tests (as root, or with
#              passwordless sudo) where missing
# make lock    rewrite requirements.lock from $(VENV) after a change of pyproject.toml's dependencies
# make wheelhouse  every wheel the Docker image installs, into wheelhouse/ (Linux x86-64, Python 3.11),
#              for an offline image build: docker build --build-arg WHEELHOUSE=1 .
# make audit   check requirements.lock's pins for known vulnerabilities (pip-audit via tools/audit.py; network)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_ARGS ?=

# glibc malloc settings (docs/tuning.md, model/tuning.py ALLOCATOR_ENV): up to 3.5x faster torch on CPU.
export MALLOC_MMAP_THRESHOLD_ := 33554432
export MALLOC_TRIM_THRESHOLD_ := 4294967296
export MALLOC_TOP_PAD_ := 1073741824
# torch and faiss each have an OpenMP runtime: idle threads must sleep, not spin (service/api/server.py).
export OMP_WAIT_POLICY := PASSIVE
# numpy's OpenBLAS: idle threads sleep after 2^10 cycles instead of 2^28 (model/tuning.py).
export OPENBLAS_THREAD_TIMEOUT := 10

TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
WHEEL_TARGET := --only-binary=:all: --python-version 3.11 --implementation cp --platform manylinux_2_28_x86_64 \
	--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64

.PHONY: install test-tools serve test test-slow lock audit wheelhouse

install: $(VENV)/.installed test-tools

$(VENV)/.installed: pyproject.toml requirements.lock
	@echo "== installing into $(VENV) (torch first, pinned: a plain torch requirement can pull a multi-GB build)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -c requirements.lock torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -c requirements.lock -e '.[test,milvus,milvus-server,ray,onnxruntime,backbones]'
	touch $@

# Debian packages the tests need: chromium (the browser tests drive it with Playwright, no browser
# download: see tests/helpers/browser.py) and strace (tests/service/e2e/test_fsync_order.py traces the
# server's fsyncs). Installed when missing, as root or with passwordless sudo.
SYSTEM_PACKAGES := chromium:/usr/bin/chromium strace:/usr/bin/strace

test-tools:
	@missing=""; for entry in $(SYSTEM_PACKAGES); do \
	  [ -x "$${entry#*:}" ] || missing="$$missing $${entry%%:*}"; done; \
	if [ -z "$$missing" ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "== NOTE:$$missing missing and apt-get is not available: install them by hand, or their tests fail"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "== installing Debian's$$missing (for the tests)"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	elif sudo -n true 2>/dev/null; then \
	  echo "== installing Debian's$$missing (for the tests)"; \
	  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	else \
	  echo "== NOTE:$$missing missing and this is not root: run 'sudo apt-get install$$missing', or their tests fail"; \
	fi

serve: install
	$(BIN)/asen demo $(DEMO_ARGS)

# Lint (ruff: pyflakes, pycodestyle, import order, pyupgrade, bugbear, complexity and size per function),
# the formatter's check (ruff format) and type-check (mypy) before the tests; all configured in pyproject.toml.
test: install
	$(BIN)/ruff check model index service tests bench tools asen_search/*.py
	$(BIN)/ruff format --check model index service tests bench tools asen_search/*.py
	$(BIN)/mypy -p asen_search
	$(BIN)/python -m pytest

# The slow tests (real engines started by the tests: two service replicas on an embedded Milvus server,
# a two-node Ray cluster, a locust load run, a scan over Milvus Lite; the page's builder and threshold mode
# in a browser; about 3 minutes on 2 cores). CI runs them after `make test`.
test-slow: install
	$(BIN)/python -m pytest -m slow

# The lock is the dependency closure of '.[test,milvus,milvus-server,ray,onnxruntime,backbones]' as installed in $(VENV) (not other
# tools that may sit there too); written to a temporary file first so a failure leaves the old lock.
lock:
	$(BIN)/python tools/lock_deps.py --extra test --extra milvus --extra milvus-server --extra ray --extra onnxruntime --extra backbones > requirements.lock.tmp || { rm -f requirements.lock.tmp; exit 1; }
	mv requirements.lock.tmp requirements.lock

# Exit 1 on a known vulnerability in a pinned version, 2 when no vulnerability source is reachable.
audit: install
	$(BIN)/python tools/audit.py --lock requirements.lock

# torch from the CPU wheel index first; then the package's dependencies (torch found in wheelhouse/),
# pinned by the lock, and the build backend the image's `pip install .` needs.
wheelhouse:
	$(PYTHON) -m pip download -d wheelhouse $(WHEEL_TARGET) --index-url $(TORCH_INDEX_URL) torch==2.14.1 torchvision==0.29.1
	$(PYTHON) -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	  print(*p['dependencies'], *p['optional-dependencies']['milvus'], sep='\n')" \
	  > wheelhouse/requirements.txt
	$(PYTHON) -m pip download -d wheelhouse $(WHEEL_TARGET) --find-links wheelhouse -c requirements.lock \
	  -r wheelhouse/requirements.txt 'setuptools>=68' wheel
