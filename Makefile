# The README's two commands, `make demo` and `make test`, work on a fresh clone of a fresh machine: they install
# what they need (Debian packages when run as root, a venv with the project in it) before they run.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FUZZ_SECONDS ?= 60

# Real components the tests and the demo drive: libpam + pamtester, libfido2, cryptsetup, e2fsprogs (fscrypt on
# ext4), pam-u2f for the side-by-side benchmark, gcc for the PAM module and the libfido2 test programs.
DEBS := gcc libc6-dev pkg-config libpam0g-dev pamtester libfido2-dev fido2-tools cryptsetup-bin e2fsprogs \
        util-linux libpam-u2f pamu2fcfg

PAM_SO := pam_module/pam_hmacunlock.so

.PHONY: all deps venv pam test demo bench fuzz clean docs

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
