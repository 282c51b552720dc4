# Helpers the guest scripts share (sourced; run.sh copies this file into the
# run directory, /tmp/share in the guest): PASS/FAIL lines, background daemons,
# and polling on the guest's own clock.
failed=0
pids=()

now() { cut -d' ' -f1 /proc/uptime; }
say() { echo "[$(now)] $*"; }
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failed=1; }
check() { # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
bg() { # bg LOGFILE COMMAND...: start a daemon in the background, remember it
    local log=$1; shift
    "$@" >"$log" 2>&1 &
    pids+=($!)
}
wait_for() { # wait_for SECONDS COMMAND...: poll until COMMAND succeeds
    # A deadline on the guest's clock: under TCG each poll costs far more
    # than its nominal 0.1 s, so counting polls would stretch the limit.
    local deadline; deadline=$(awk -v s="$1" '{print int($1) + s}' /proc/uptime); shift
    while ! "$@" 2>/dev/null; do
        [ "$(cut -d. -f1 /proc/uptime)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}
