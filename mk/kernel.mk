# The real-kernel test: boots a Debian kernel with nfsd under qemu TCG (no KVM
# needed) and checks the gss-proxy upcall and an NFSv4.2 sec=krb5 mount against
# the daemon. Everything it downloads or builds goes under build/kernel-vm.
#
#   make kernel-test                 gssproxy-py as the acceptor
#   make kernel-test GP_IMPL=c       the C gssproxy (proves the harness itself)
#   make kernel-vm                   only fetch/build the kernel and initramfs
#
# Included from the top-level Makefile, whose `deps` target provides the venv
# (the guest runs it from the host's / shared read-only over 9p). Wall time on
# a 2-core machine: about 30 s (C gssproxy) to 55 s (gssproxy-py, whose NFS
# guest also restarts the daemon at debug level 1 for the direct path: 53.5 and
# 55.0 s on 2026-12-07, busy machine); the first run adds about 10 s (kernel
# download, initramfs) plus any package installs.

GP_IMPL ?= py

.PHONY: kernel-test kernel-vm

kernel-vm:
	tests/kernel/build.sh >/dev/null

kernel-test: deps kernel-test-deps
	GP_IMPL=$(GP_IMPL) tests/kernel/run.sh $(KERNEL_GUESTS)

# Guest scripts, run one after the other in one boot.
KERNEL_GUESTS := tests/kernel/guest.sh

# CIFS (docs/CIFS.md): after the NFS case, in the same boot, a real SMB 3.1.1
# sec=krb5 mount whose cifs.upcall gets the user's ticket from the daemon
# (adds 25-40 s wall; alone, in its own boot: tests/kernel/run_cifs.sh).
KERNEL_GUESTS += tests/kernel/guest_cifs.sh
.PHONY: kernel-test-deps
kernel-test-deps:
	tests/kernel/run_cifs.sh --deps
