#!/bin/bash
# Boot the kernel-test guest under qemu TCG and report its verdict.
#
#   tests/kernel/run.sh [GUEST_SCRIPT...]   (default: tests/kernel/guest.sh)
#
# Several scripts run one after the other in the same boot, each in its own
# bash (so each cleans up after itself); any failure fails the run.
#
# Environment:
#   GP_IMPL=py|c      the daemon under test: gssproxy-py (default) or /usr/sbin/gssproxy
#   KVM_TIMEOUT=SEC   wall-clock limit for the guest (default 420)
#   KVM_MEM=MB        guest memory (default 1536)
#   KVM_KEEP=1        keep the run directory (logs copied out of the guest)
#
# The guest prints PASS:/FAIL: lines and finally KVM_GUEST_RC=N on the serial
# console; qemu's own status is always 0, so the verdict comes from that line.
# The guest has no network card: all its traffic stays on its own loopback.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${KVM_BUILD_DIR:-$repo/build/kernel-vm}
guest_script=${1:-$here/guest.sh}
impl=${GP_IMPL:-py}

kver=$("$here/build.sh" | tail -n1)
kdir=$out/$kver
# One directory per run, so concurrent runs do not share logs.
run=$out/run-$impl-$$
rm -rf "$run"
mkdir -p "$run"
if [ $# -gt 1 ]; then
    {
        echo '#!/bin/bash'
        echo 'rc=0'
        n=0
        for g in "$@"; do
            n=$((n + 1))
            cp "$g" "$run/guest-$n.sh"
            echo "bash /tmp/share/guest-$n.sh || rc=1"
        done
        echo 'exit $rc'
    } >"$run/guest.sh"
else
    cp "$guest_script" "$run/guest.sh"
fi
cp "$here"/guest-lib.sh "$run/"
cat >"$run/env" <<ENV
REPO=$repo
KIMG=$kdir/kimg
KVER=$kver
GP_IMPL=$impl
PY=$repo/.venv/bin/python
SHARE=/tmp/share
ENV

serial=$run/serial.log
start=$(date +%s.%N)
set +e
timeout --foreground -k 10 "${KVM_TIMEOUT:-420}" \
    qemu-system-x86_64 -accel tcg -smp 2 -m "${KVM_MEM:-1536}" \
        -display none -monitor none -serial stdio -no-reboot -nic none \
        -kernel "$kdir/vmlinuz" -initrd "$kdir/initrd.img" \
        -append "console=ttyS0 quiet panic=-1 loglevel=4" \
        -virtfs local,path=/,mount_tag=host,security_model=passthrough,readonly=on,multidevs=remap \
        -virtfs "local,path=$run,mount_tag=share,security_model=passthrough" \
        </dev/null 2>&1 | tee "$serial"
qemu_rc=${PIPESTATUS[0]}
set -e
end=$(date +%s.%N)

rc=$(tr -d '\r' <"$serial" | sed -n 's/^KVM_GUEST_RC=\([0-9]*\)$/\1/p' | tail -n1)
npass=$(tr -d '\r' <"$serial" | grep -c '^PASS:' || true)
nfail=$(tr -d '\r' <"$serial" | grep -c '^FAIL:' || true)
printf 'kernel-test (%s, kernel %s): %d passed, %d failed, guest rc %s, %.1f s wall\n' \
    "$impl" "$kver" "$npass" "$nfail" "${rc:-none}" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')"
if [ -z "$rc" ]; then
    echo "kernel-test: no KVM_GUEST_RC line (qemu exit $qemu_rc: timeout or guest crash); logs in $run" >&2
    exit 1
fi
if [ "$rc" != 0 ] || [ "$nfail" != 0 ] || [ "$npass" = 0 ]; then
    echo "kernel-test: FAILED; logs in $run" >&2
    exit 1
fi
[ -n "${KVM_KEEP:-}" ] || rm -rf "$run"
