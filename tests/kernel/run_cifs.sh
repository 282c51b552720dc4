#!/bin/bash
# The CIFS case of the kernel test (tests/kernel/guest_cifs.sh).
#
#   tests/kernel/run_cifs.sh           install what it needs, then boot a guest
#                                      for the CIFS case alone (tests/kernel/run.sh)
#   tests/kernel/run_cifs.sh --deps    only install what it needs (make kernel-test
#                                      runs the case in the NFS case's boot)
#
# Needs on the host, because the guest runs the host's tree: smbd (samba),
# cifs.upcall and mount.cifs (cifs-utils), request-key (keyutils). Same
# environment as run.sh (GP_IMPL=py|c, KVM_TIMEOUT, KVM_MEM, KVM_KEEP).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
missing=$(for p in samba cifs-utils keyutils; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
done)
if [ -n "$missing" ]; then
    echo "kernel-test-cifs: installing" $missing >&2
    $sudo apt-get update -qq
    # policy-rc.d (or the lack of systemd) keeps smbd from starting on the host.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        $missing >/dev/null
fi
[ "${1:-}" = --deps ] && exit 0
exec "$here/run.sh" "$here/guest_cifs.sh"
