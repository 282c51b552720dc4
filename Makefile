# gssproxy-py: the two commands a user needs are `make run` and `make test`;
# both install whatever is missing first (Debian packages, then .venv).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# Debian's /usr/bin/python3: the venv must be runnable by the other uids tests use.
SYSPY   := /usr/bin/python3
# The p11-kit tests drive pkcs11-tool (opensc), p11tool (gnutls-bin), the libp11
# engine, ssh and a private sshd, curl, openvpn, and wpa_supplicant against
# hostapd; on a machine booted with systemd, installing openssh-server also
# enables ssh.service (`systemctl disable --now ssh` if unwanted); the openvpn
# and hostapd units start nothing without a configuration.
APT_PKGS := krb5-kdc krb5-admin-server krb5-user libkrb5-dev gssproxy krb5-gss-samples \
            krb5-pkinit softhsm2 opensc p11-kit p11-kit-modules gnutls-bin libengine-pkcs11-openssl \
            curl openvpn wpasupplicant hostapd \
            openssh-client openssh-server keyutils iproute2 python3-venv python3-dev \
            util-linux slapd ldap-utils krb5-kdc-ldap systemd man-db faketime gcc
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# mypyc: the modules listed in gssproxy_py/compiled.py are compiled in place
# (mk/mypyc_build.py); `make deps MYPYC=0` (or GSSPROXY_PY_NO_MYPYC=1 in the
# environment) removes the build instead. A build that fails leaves the
# pure-Python tree, which is what runs without one. The stamp in the venv
# is remade, and the modules rebuilt, when a compiled module's source changes.
MYPYC   ?= $(if $(filter-out 0,$(GSSPROXY_PY_NO_MYPYC)),0,1)
MYPYC_STAMP := $(VENV)/.mypyc
MYPYC_SRC := gssproxy_py/compiled.py $(shell sed -n 's/^    "\(gssproxy_py\.[a-z0-9_.]*\)",$$/\1/p' \
                 gssproxy_py/compiled.py | tr . / | sed 's/$$/.py/')
COMPILED := $(if $(filter 1,$(MYPYC)),$(MYPYC_STAMP),nocompile)
IDL     := $(wildcard idl/*.x)
STUBS   := $(patsubst idl/%.x,gssproxy_py/proto/%.py,$(IDL))

.PHONY: help deps apt nocompile run test unit pytest pytest-pure lint stubs docs fuzz bench kernel-test clean

help:
	@echo "make run     start a throwaway realm and the daemon; show a real client through it"
	@echo "make test    install what is missing, lint, run the whole test suite and kernel-test"
	@echo "make kernel-test  only the real-kernel test: nfsd's upcall and a sec=krb5 NFS mount in a VM"
	@echo "make bench   gssproxy-py against the C gssproxy, side by side"
	@echo "make stubs   regenerate gssproxy_py/proto from idl/*.x"
	@echo "make docs    regenerate the option reference in docs/CONFIG.md and gssproxy-py.conf(5)"
	@echo "make fuzz    run the decoder fuzz targets for longer"
	@echo "make lint    ruff and mypy --strict"

deps: apt $(STAMP) $(COMPILED)

# Install only the packages that are missing, so a prepared machine pays nothing.
apt:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:" $$missing; \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): setup.cfg pyproject.toml
	[ -x $(PY) ] || $(SYSPY) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

$(MYPYC_STAMP): $(STAMP) $(MYPYC_SRC)
	@echo "mypyc: compiling the hot modules (gssproxy_py/compiled.py)"
	$(PY) mk/mypyc_build.py || echo "mypyc: the pure-Python modules run"
	touch $@

nocompile:
	@if [ -f gssproxy_py/compiled.sha256 ]; then $(PY) mk/mypyc_build.py --clean; fi
	rm -f $(MYPYC_STAMP)

run: deps
	$(PY) -m gssproxy_py.testing.demo

# kernel-test boots a VM under qemu TCG (most of a minute; see mk/kernel.mk).
test: deps lint pytest pytest-pure kernel-test

# The whole suite runs on the compiled modules (when they are built);
# pytest-pure runs the pure layers again on the .py files, so the fallback
# is tested too.
pytest: deps
	$(PY) -m pytest -q

pytest-pure: deps
	@if [ -f gssproxy_py/compiled.sha256 ]; then \
	    echo "GSSPROXY_PY_NO_MYPYC=1: tests/unit and tests/conformance on the .py files"; \
	    GSSPROXY_PY_NO_MYPYC=1 $(PY) -m pytest -q tests/unit tests/conformance; \
	fi

unit: deps
	$(PY) -m pytest -q tests/unit tests/conformance

# bench imports tests.conformance.kernel_client by that name (tests/ has no
# __init__.py), hence --explicit-package-bases for the second mypy run.
lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict gssproxy_py
	$(VENV)/bin/mypy --strict --explicit-package-bases bench tests/conformance/kernel_client.py

stubs: $(STAMP)
	@for x in $(IDL); do \
	    out=gssproxy_py/proto/$$(basename $$x .x).py; \
	    echo "xdrgen $$x -> $$out"; \
	    $(PY) -m gssproxy_py.xdrgen $$x -o $$out || exit 1; \
	done

docs: $(STAMP)
	$(PY) -m gssproxy_py.config.reference --write docs/CONFIG.md
	$(PY) -m gssproxy_py.config.manpage --write man/gssproxy-py.conf.5

fuzz: deps
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-5000} $(PY) -m pytest -q tests/fuzz

bench: deps
	$(PY) -m bench

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find gssproxy_py -name '*.so' -delete
	rm -f gssproxy_py/compiled.sha256 $(MYPYC_STAMP)

include mk/kernel.mk
include mk/install.mk
