# The README's two commands, `make demo` and `make test`, work on a fresh clone of a fresh machine: they install
# what they need (Debian packages when run as root, a venv with the project in it) before they run.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FUZZ_SECONDS ?= 60

# Real components the tests and the demo drive: libpam + pamtester, libfido2, cryptsetup, e2fsprogs (fscrypt on
# ext4), pam-u2f for the side-by-side benchmark, gcc for the PAM module and the libfido2 test programs, cppcheck
# for `make lint`, systemd for systemd-cryptenroll and cryptsetup's systemd-fido2 token plugin (Debian 12 ships both
# in `systemd`), binutils for the nm that lists libfido2's functions for the tests' wrapper library.
DEBS := gcc libc6-dev pkg-config libpam0g-dev pamtester libfido2-dev fido2-tools cryptsetup-bin e2fsprogs \
        util-linux libpam-u2f pamu2fcfg cppcheck systemd binutils

PAM_SO := pam_module/pam_hmacunlock.so

.PHONY: all deps venv pam test lint demo bench fuzz clean docs

all: venv

deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "Installing Debian packages:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	else \
	  echo "Not root: skipping Debian packages ($(DEBS)); tests that need them skip and say so."; \
	fi

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(STAMP) pam

pam: $(PAM_SO)

$(PAM_SO): $(wildcard pam_module/*.c pam_module/*.h) pam_module/protocol.py pam_module/Makefile
	@if [ -f pam_module/pam_hmacunlock.c ] && [ -f /usr/include/security/pam_modules.h ]; then \
	  $(MAKE) -C pam_module; \
	else \
	  echo "PAM module not built (needs pam_module/pam_hmacunlock.c and libpam0g-dev)"; \
	fi

test: deps venv
	$(PY) -m pytest -ra tests

# The gate CI runs before the tests (.ci/run): ruff's rules and format, mypy over the three packages, and the C
# module's compiler warnings and cppcheck. Rules and settings live in pyproject.toml ([tool.ruff], [tool.mypy]) and
# pam_module/Makefile. mypy reads the packages by their import names through a tree of links (setup.cfg maps the
# folders; the editable install's import hook is invisible to it).
TYPECHECK := build/typecheck
LINT_STAMP := $(VENV)/.lint-installed

$(LINT_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[lint]'
	@touch $@

lint: deps venv $(LINT_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@mkdir -p $(TYPECHECK)
	@ln -sfn $(CURDIR)/libhmacunlock $(TYPECHECK)/libhmacunlock
	@ln -sfn $(CURDIR)/cli $(TYPECHECK)/hmacunlock_cli
	@ln -sfn $(CURDIR)/pam_module $(TYPECHECK)/hmacunlock_pam
	cd $(TYPECHECK) && MYPYPATH=. $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml \
	  --cache-dir $(CURDIR)/build/mypy-cache -p libhmacunlock -p hmacunlock_cli -p hmacunlock_pam
	@if [ -f /usr/include/security/pam_modules.h ] && command -v cppcheck >/dev/null; then \
	  $(MAKE) --no-print-directory -C pam_module lint; \
	else \
	  echo "make lint: needs libpam0g-dev and cppcheck for the C module (run as root to install them)" >&2; exit 1; \
	fi

demo: deps venv
	$(VENV)/bin/hmacunlock demo

bench: deps venv
	$(PY) -m bench.run

fuzz: deps venv
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q 'atheris>=2.3' || \
	  echo "atheris could not be installed: fuzzing with the built-in engine (tests/fuzz/engine.py)"
	$(PY) -m tests.fuzz.run --seconds $(FUZZ_SECONDS)

# docs/cli.md and the exit-code table in docs/troubleshooting.md are generated from the code (tests/test_docs.py).
docs: venv
	$(PY) tools/gen_docs.py

clean:
	rm -rf $(VENV) build *.egg-info
	-$(MAKE) -C pam_module clean
