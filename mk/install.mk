# make install / make uninstall: gssproxy-py as the system's GSS-Proxy daemon.
#
# Debian refuses `pip install` into its own Python (externally managed), so
# the daemon gets a virtual environment of its own, built from Debian's
# /usr/bin/python3 under a fixed prefix, and its entry points are linked
# into $(SBINDIR)/$(BINDIR). DESTDIR stages the whole tree elsewhere (the
# tests install into a temporary root); the paths written into the venv's
# scripts and the unit are the final ones, without DESTDIR.
#
# To install more files, add them to one of the lists below: install and
# uninstall both walk the same lists, so uninstall removes what install put.
# Nothing here touches /etc/gssproxy, the state directories or systemd's
# enablement; docs/INSTALL.md says what to run for that.

PREFIX   ?= /usr/local
SBINDIR  ?= $(PREFIX)/sbin
BINDIR   ?= $(PREFIX)/bin
# the virtual environment
LIBDIR   ?= $(PREFIX)/lib/gssproxy-py
UNITDIR  ?= $(PREFIX)/lib/systemd/system
USERUNITDIR ?= $(PREFIX)/lib/systemd/user
MANDIR   ?= $(PREFIX)/share/man
DOCDIR   ?= $(PREFIX)/share/doc/gssproxy-py

# entry points (setup.cfg console_scripts) linked from the venv
INSTALL_SBIN  := gssproxy-py gssproxy-py-ctl
INSTALL_BIN   := gssproxy-py-call gssproxy-py-sign gssproxy-py-xdrgen
# systemd units; ExecStart's /usr/local/sbin/ becomes $(SBINDIR)/
INSTALL_UNITS := contrib/gssproxy-py.service
# user units (userproxy mode, `systemctl --user enable --now gssproxy-py.socket`)
INSTALL_USER_UNITS := contrib/systemd/user/gssproxy-py.socket contrib/systemd/user/gssproxy-py.service
INSTALL_MAN5  := man/gssproxy-py.conf.5
INSTALL_MAN8  := man/gssproxy-py.8 man/gssproxy-py-ctl.8
# copied into $(DOCDIR) as they are
INSTALL_DOCS  := README.md CHANGELOG.md LICENSE docs/INSTALL.md docs/CIFS.md docs/OPERATIONS.md
INSTALL_EXAMPLES := $(wildcard conf/*.conf) contrib/acceptor-only.conf \
                    contrib/request-key.d/cifs.spnego.conf

VENV_DEST := $(DESTDIR)$(LIBDIR)
# what building the package reads
INSTALL_SOURCES := setup.cfg pyproject.toml MANIFEST.in README.md LICENSE gssproxy_py

.PHONY: install uninstall

# With MYPYC=1 (the default) the modules mypyc compiles are built in the
# tree first, as `make deps` does (which needs its .venv), and their
# extensions copied next to the installed .py files; the daemon's guard
# (gssproxy_py/compiled.py) checks them against those files at start.
# MYPYC=0, or a build that failed, installs the pure-Python package.
install: $(if $(filter 1,$(MYPYC)),$(MYPYC_STAMP))
	@test -x $(SYSPY) || { echo "$(SYSPY) is missing: apt-get install python3-venv"; exit 1; }
	rm -rf '$(VENV_DEST)'
	$(SYSPY) -m venv '$(VENV_DEST)'
	@# Built from a copy: setuptools writes build/ and *.egg-info next to the
	@# sources, and build/ holds the kernel test's VM.
	src=$$(mktemp -d) && trap 'rm -rf "$$src"' EXIT && \
	cp -r $(INSTALL_SOURCES) "$$src/" && \
	find "$$src/gssproxy_py" \( -name '*.so' -o -name compiled.sha256 \) -delete && \
	'$(VENV_DEST)/bin/python' -m pip install -q --disable-pip-version-check \
	    --no-warn-script-location "$$src"
	if [ '$(MYPYC)' = 1 ] && [ -f gssproxy_py/compiled.sha256 ]; then \
	    site=$$('$(VENV_DEST)/bin/python' -c 'import sysconfig; print(sysconfig.get_path("purelib"))') && \
	    for f in gssproxy_py/compiled.sha256 $$(find gssproxy_py -name '*.so'); do \
	        install -D -m 0644 "$$f" "$$site/$$f" || exit 1; \
	    done; \
	fi
	@# The venv was made at $(VENV_DEST); it will run from $(LIBDIR).
	@if [ -n '$(DESTDIR)' ]; then \
	    grep -rlI --null -F '$(VENV_DEST)' '$(VENV_DEST)/bin' '$(VENV_DEST)/pyvenv.cfg' \
	        | xargs -0 -r sed -i 's|$(VENV_DEST)|$(LIBDIR)|g'; \
	fi
	install -d '$(DESTDIR)$(SBINDIR)' '$(DESTDIR)$(BINDIR)'
	for p in $(INSTALL_SBIN); do ln -sfn '$(LIBDIR)/bin/'$$p '$(DESTDIR)$(SBINDIR)/'$$p; done
	for p in $(INSTALL_BIN); do ln -sfn '$(LIBDIR)/bin/'$$p '$(DESTDIR)$(BINDIR)/'$$p; done
	install -d '$(DESTDIR)$(UNITDIR)' '$(DESTDIR)$(USERUNITDIR)'
	for u in $(INSTALL_UNITS); do \
	    sed 's|/usr/local/sbin/|$(SBINDIR)/|g' $$u > '$(DESTDIR)$(UNITDIR)/'$$(basename $$u); \
	    chmod 0644 '$(DESTDIR)$(UNITDIR)/'$$(basename $$u); \
	done
	for u in $(INSTALL_USER_UNITS); do \
	    sed 's|/usr/local/sbin/|$(SBINDIR)/|g' $$u > '$(DESTDIR)$(USERUNITDIR)/'$$(basename $$u); \
	    chmod 0644 '$(DESTDIR)$(USERUNITDIR)/'$$(basename $$u); \
	done
	install -d '$(DESTDIR)$(MANDIR)/man5' '$(DESTDIR)$(MANDIR)/man8'
	install -m 0644 $(INSTALL_MAN5) '$(DESTDIR)$(MANDIR)/man5/'
	install -m 0644 $(INSTALL_MAN8) '$(DESTDIR)$(MANDIR)/man8/'
	install -d '$(DESTDIR)$(DOCDIR)/examples'
	install -m 0644 $(INSTALL_DOCS) '$(DESTDIR)$(DOCDIR)/'
	install -m 0644 $(INSTALL_EXAMPLES) '$(DESTDIR)$(DOCDIR)/examples/'
	@echo
	@echo "gssproxy-py is installed in $(LIBDIR), the daemon is $(SBINDIR)/gssproxy-py."
	@echo "To make it the system's gssproxy (see $(DOCDIR)/INSTALL.md):"
	@echo "  systemctl daemon-reload"
	@echo "  systemctl disable --now gssproxy.service   # Debian's C daemon, if installed"
	@echo "  systemctl enable --now gssproxy-py.service # also becomes gssproxy.service"

uninstall:
	rm -rf '$(VENV_DEST)' '$(DESTDIR)$(DOCDIR)'
	rm -f $(foreach p,$(INSTALL_SBIN),'$(DESTDIR)$(SBINDIR)/$(p)') \
	      $(foreach p,$(INSTALL_BIN),'$(DESTDIR)$(BINDIR)/$(p)') \
	      $(foreach u,$(INSTALL_UNITS),'$(DESTDIR)$(UNITDIR)/$(notdir $(u))') \
	      $(foreach u,$(INSTALL_USER_UNITS),'$(DESTDIR)$(USERUNITDIR)/$(notdir $(u))') \
	      $(foreach m,$(INSTALL_MAN5),'$(DESTDIR)$(MANDIR)/man5/$(notdir $(m))') \
	      $(foreach m,$(INSTALL_MAN8),'$(DESTDIR)$(MANDIR)/man8/$(notdir $(m))')
	@echo "If it was enabled: systemctl disable --now gssproxy-py.service; systemctl daemon-reload"
