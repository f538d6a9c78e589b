# corral: the targets the README names.
#   make setup  - system packages (apt, when root) and .venv with corral installed; idempotent
#   make run    - the main job: the daemon supervising examples/compose.yaml
#   make test   - setup, then the whole test suite (root tests included when root)
#   make bench  - side-by-side benchmarks against crun and runc (results in bench/results/)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := busybox-static runc crun user-mode-linux iproute2 util-linux procps prometheus tini skopeo docker-registry apache2-utils umoci openssl

.PHONY: setup run test unit bench clean

setup: $(VENV)/.installed
	@# Bytecode written ahead: PYTHONDONTWRITEBYTECODE (set on some hosts) would
	@# otherwise make every `corral` start recompile its modules.
	@$(PY) -m compileall -q supervisor runtime protocols metrics
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "apt: installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  fi; \
	else echo "setup: not root, skipping system packages ($(APT_PACKAGES))"; fi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# compat: a plain .pth path entry instead of an import-hook finder, which
	# costs every `corral` start ~15 ms (bench/README.md).
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	# The venv's setuptools (pip builds in an isolated env) only adds a .pth that
	# imports its distutils shim at every interpreter start: ~0.7 ms of each command.
	$(PY) -m pip uninstall -q -y setuptools
	touch $@

run: setup
	$(PY) -m supervisor.demo

test: setup
	@if [ "$$(id -u)" = 0 ]; then $(PY) -m pytest --run-root -q tests; \
	else echo "test: not root, root tests will be skipped"; $(PY) -m pytest -q tests; fi

unit: setup
	$(PY) -m pytest -q tests/unit

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
