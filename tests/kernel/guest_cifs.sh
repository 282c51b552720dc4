#!/bin/bash
# The CIFS case of the kernel test, run as root inside the guest after the NFS
# case (`make kernel-test`: run.sh guest.sh guest_cifs.sh, one boot) or alone
# (tests/kernel/run_cifs.sh). It starts from scratch either way: a real
# kernel SMB 3.1.1 sec=krb5 mount whose cifs.upcall gets the user's service
# ticket only from the daemon under test (GP_IMPL=py: gssproxy-py, GP_IMPL=c:
# /usr/sbin/gssproxy), through the interposer plugin.
#
#   alice (uid 4242)  client_keytab mode: her keys sit in the daemon-owned
#                     /var/lib/gssproxy/clients/4242.keytab; the daemon gets
#                     and caches her TGT in clients/krb5cc_4242
#   bob   (uid 4243)  ccache mode: only a daemon-owned clients/krb5cc_4243
#                     holding his TGT, no keytab anywhere
#
# The daemon runs the shipped conf/50-cifs-upcall.conf and the request-key
# line is the shipped contrib/request-key.d/cifs.spnego.conf. Each user writes
# a file and reads it back; smbd's share shows the file owned by that user.
# Then the daemon is stopped and the same mount must fail.
#
# Prints PASS:/FAIL: lines; exits non-zero if any check failed. Logs are
# copied to /tmp/share/cifs (the host's run directory) on the way out.
set -u
. /tmp/share/env

# --- a mount namespace whose root is the host tree ----------------------------
# cifs.upcall setns()es into the mount namespace of the process that mounted,
# and setns() resets its root to that namespace's root. In the guest's own
# namespace that is the initramfs (init.sh only chroots into the host tree),
# where no krb5.conf, mech.d or daemon socket exists. So rerun this script in
# a new mount namespace with the host tree moved over its root, as
# switch_root would; the kernel's request-key helper still starts in the
# initramfs, and its wrapper chroots into the same host tree.
if [ -z "${KT_CIFS_NS:-}" ]; then
    export KT_CIFS_NS=1
    exec chroot /proc/1/root /bin/busybox unshare -m /bin/busybox sh -c \
        'cd /host && /bin/busybox mount --move . / && exec /bin/busybox chroot . /bin/bash "$0"' \
        "$0"
fi

W=/tmp/kc
REALM=EXAMPLE.TEST
GPDIR=/var/lib/gssproxy
CLIENTS=$GPDIR/clients
SOCK=$GPDIR/default.sock # the interposer's compiled-in default
SHARE=/tmp/smb-share # a tmpfs (the host tree is read-only)
MNT=/tmp/mnt-cifs
CONF=$REPO/conf/50-cifs-upcall.conf
REQKEY=$REPO/contrib/request-key.d/cifs.spnego.conf
ALICE=4242
BOB=4243
. /tmp/share/guest-lib.sh
daemon_pid=""
not() { ! "$@"; }
as_user() { # as_user UID COMMAND...: run as that uid (gid = uid), no groups
    local uid=$1; shift
    setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@"
}
finish() {
    say "cleaning up"
    for m in "$MNT"-*; do mountpoint -q "$m" && umount -f "$m"; done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.2
    # One cp: every process start is dear under TCG.
    mkdir -p /tmp/share/cifs
    cp "$W"/*.log "$W"/syslog "$W"/samba/log.* /tmp/share/cifs/ 2>/dev/null
    dmesg >/tmp/share/cifs/dmesg.log
    say "guest done, failed=$failed"
    exit $failed
}
trap finish EXIT
mkdir -p "$W" "$MNT-alice" "$MNT-bob" "$MNT-neg"

say "guest up: kernel $(uname -r), daemon under test: $GP_IMPL"
# --- the daemon under test and smbd first: their start-up is the long pole -------
# krb5.conf before the daemon, which loads it once at start.
cat >/etc/krb5.conf <<KRB5
[libdefaults]
    default_realm = $REALM
    dns_lookup_realm = false
    dns_lookup_kdc = false
    rdns = false
    udp_preference_limit = 1
[realms]
    $REALM = {
        kdc = 127.0.0.1:88
    }
[domain_realm]
    localhost = $REALM
KRB5
# /var/lib/gssproxy stays 0755 (users must reach the socket), clients/ is 0700.
mkdir -p "$CLIENTS" "$GPDIR/rcache" "$W/conf.d"
chmod 0755 "$GPDIR"
chmod 0700 "$CLIENTS"
cp "$CONF" "$W/conf.d/"
cat >"$W/gssproxy.conf" <<CONF
[gssproxy]
  debug_level = 1
CONF
DLOG=$W/daemon.log
# The daemon runs in the guest's first mount namespace, like request-key and
# cifs.upcall's exec: /proc/PID/exe of a process from another mount namespace
# does not resolve to a path (the daemon would see no program at all).
exec_in_first_ns() { exec chroot /proc/1/root /bin/busybox nsenter -t 1 -m /bin/busybox chroot /host "$@"; }
case $GP_IMPL in
c) bg "$DLOG" exec_in_first_ns /usr/sbin/gssproxy -i -d -c "$W/gssproxy.conf" -C "$W/conf.d" \
    -s "$SOCK" ;;
py) bg "$DLOG" exec_in_first_ns /usr/bin/env PYTHONPATH="$REPO" "$PY" -m gssproxy_py.server.cli \
    -i --debug-level=1 -c "$W/gssproxy.conf" -C "$W/conf.d" -s "$SOCK" ;;
*) fail "unknown GP_IMPL=$GP_IMPL"; exit 1 ;;
esac
daemon_pid=${pids[-1]}
say "daemon started (pid $daemon_pid)"

ip link set lo up # before smbd, which binds to lo's address
hostname localhost

# smbd: standalone, krb5 from the dedicated keytab (read per session setup, so
# it may be written later), a tmpfs share.
mkdir -p "$SHARE" "$W"/samba/{state,lock,cache,run,private,ncalrpc}
chmod 1777 "$SHARE"
cat >"$W/smb.conf" <<SMB
[global]
    server role = standalone server
    security = user
    realm = $REALM
    workgroup = EXAMPLE
    netbios name = LOCALHOST
    kerberos method = dedicated keytab
    dedicated keytab file = FILE:/etc/krb5.keytab
    server min protocol = SMB3
    interfaces = lo
    bind interfaces only = yes
    disable netbios = yes
    smb ports = 445
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
    state directory = $W/samba/state
    lock directory = $W/samba/lock
    cache directory = $W/samba/cache
    pid directory = $W/samba/run
    private dir = $W/samba/private
    ncalrpc dir = $W/samba/ncalrpc
    log file = $W/samba/log.smbd
    log level = 1 auth:3
[share]
    path = $SHARE
    read only = no
SMB
# Not --no-process-group: smbd's own group keeps its exit away from ours.
bg "$W/smbd.log" smbd --foreground -s "$W/smb.conf"
say "smbd started"

bg "$W/syslogd.log" busybox syslogd -n -O "$W/syslog" # cifs.upcall logs only there
modprobe -d "$KIMG" cifs || fail "modprobe cifs"

# --- local users: nothing of theirs anywhere they can read -----------------------
echo "alice:x:$ALICE:$ALICE::/tmp:/bin/sh" >>/etc/passwd
echo "bob:x:$BOB:$BOB::/tmp:/bin/sh" >>/etc/passwd
printf 'alice:x:%s:\nbob:x:%s:\n' "$ALICE" "$BOB" >>/etc/group

# --- KDC, principals, the users' credentials (only in daemon-owned files) ---------
mkdir -p "$W/db"
: >"$W/db/kadm5.acl"
cat >"$W/kdc.conf" <<KDC
[kdcdefaults]
    kdc_listen = 127.0.0.1:88
    kdc_tcp_listen = 127.0.0.1:88
[realms]
    $REALM = {
        database_name = $W/db/principal
        key_stash_file = $W/db/stash
        acl_file = $W/db/kadm5.acl
        supported_enctypes = aes256-cts-hmac-sha1-96:normal
    }
[logging]
    kdc = FILE:$W/kdc.log
KDC
export KRB5_KDC_PROFILE=$W/kdc.conf
kdb5_util create -s -r "$REALM" -P masterpw >/dev/null 2>&1 || fail "kdb5_util create"
# A test that ran before in this boot may have left its own keys there.
rm -f /etc/krb5.keytab
# Standalone smbd rejects tickets with a PAC: +no_auth_data_required.
kadmin.local >"$W/kadmin.log" 2>&1 <<KADMIN || fail "kadmin.local"
addprinc -randkey +no_auth_data_required cifs/localhost@$REALM
addprinc -randkey alice@$REALM
addprinc -randkey bob@$REALM
ktadd -k /etc/krb5.keytab cifs/localhost@$REALM
ktadd -k $CLIENTS/$ALICE.keytab alice@$REALM
ktadd -k $W/bob.keytab bob@$REALM
KADMIN
bg "$W/krb5kdc.log" krb5kdc -n
chmod 0600 /etc/krb5.keytab "$CLIENTS/$ALICE.keytab"
say "KDC started"

# bob: a TGT in the daemon-owned ccache, then his keys are gone.
kdc_up() { grep -q "commencing operation" "$W/kdc.log"; }
wait_for 30 kdc_up || fail "the KDC did not start"
kinit -k -t "$W/bob.keytab" -c "FILE:$CLIENTS/krb5cc_$BOB" "bob@$REALM" || fail "kinit bob"
rm -f "$W/bob.keytab"

# request-key runs cifs.upcall with the proxy on (the shipped line).
cp "$REQKEY" /etc/request-key.d/cifs.spnego.conf

# --- what the users can reach -------------------------------------------------------
mode_of() { stat -c '%a %u' "$1"; }
check "$GPDIR is 0755 root, so users reach the socket ($(mode_of "$GPDIR"))" \
    [ "$(mode_of "$GPDIR")" = "755 0" ]
check "$CLIENTS is 0700 root ($(mode_of "$CLIENTS"))" [ "$(mode_of "$CLIENTS")" = "700 0" ]
check "alice's keytab is 0600 root ($(mode_of "$CLIENTS/$ALICE.keytab"))" \
    [ "$(mode_of "$CLIENTS/$ALICE.keytab")" = "600 0" ]
check "bob's ccache is 0600 root ($(mode_of "$CLIENTS/krb5cc_$BOB"))" \
    [ "$(mode_of "$CLIENTS/krb5cc_$BOB")" = "600 0" ]
check "/etc/krb5.keytab is 0600 root" [ "$(mode_of /etc/krb5.keytab)" = "600 0" ]
check "alice cannot read her keytab" not as_user $ALICE cat "$CLIENTS/$ALICE.keytab" 2>/dev/null
check "bob cannot read his ccache" not as_user $BOB cat "$CLIENTS/krb5cc_$BOB" 2>/dev/null
check "no ccache of their own (/tmp/krb5cc_$ALICE, /tmp/krb5cc_$BOB)" \
    [ ! -e /tmp/krb5cc_$ALICE -a ! -e /tmp/krb5cc_$BOB ]

# Ready, or gone (no point in waiting out the deadline then).
ready_or_dead() { grep -q "Initialization complete" "$DLOG" || ! kill -0 "$daemon_pid"; }
if ! wait_for 90 ready_or_dead || ! grep -q "Initialization complete" "$DLOG"; then
    fail "the daemon did not log 'Initialization complete' (within 90 s, or it exited)"
    tail -n 30 "$DLOG"
    exit 1
fi
say "daemon ready"
smbd_up() { ss -Hltn 'sport = :445' | grep -q .; }
wait_for 60 smbd_up || { fail "smbd does not listen on 445"; tail -n 20 "$W/smbd.log"; exit 1; }
say "smbd ready"
check "the socket is 0666 (any uid may connect; services decide)" \
    [ "$(stat -c %a "$SOCK")" = 666 ]

# --- mounts ---------------------------------------------------------------------------
mount_as() { # mount_as NAME UID
    mount -t cifs //localhost/share "$MNT-$1" \
        -o "sec=krb5,cruid=$2,uid=$2,gid=$2,vers=3.1.1,ip=127.0.0.1"
}
user_case() { # user_case NAME UID MODE
    local name=$1 uid=$2 mode=$3 payload
    say "mounting as $name (uid $uid, $mode)"
    if ! mount_as "$name" "$uid"; then
        fail "SMB 3.1.1 sec=krb5 mount as $name ($mode)"
        return
    fi
    pass "SMB 3.1.1 sec=krb5 mount as $name (cruid=$uid, $mode)"
    check "the $name mount is krb5, vers 3.1.1" \
        grep -q "$MNT-$name cifs .*vers=3.1.1,sec=krb5" /proc/mounts
    payload="written by $name over SMB at $(now), daemon $GP_IMPL"
    as_user "$uid" sh -c "echo '$payload' >'$MNT-$name/$name.txt'" || fail "$name writes a file"
    check "$name reads back what she/he wrote" \
        [ "$(as_user "$uid" cat "$MNT-$name/$name.txt")" = "$payload" ]
    check "the share holds the same bytes" [ "$(cat "$SHARE/$name.txt" 2>&1)" = "$payload" ]
    local owner; owner=$(stat -c %u "$SHARE/$name.txt" 2>&1)
    check "server side: $name.txt belongs to uid $uid (smbd ran the session as $name; got $owner)" \
        [ "$owner" = "$uid" ]
}
user_case alice $ALICE "client_keytab mode"
check "the daemon cached alice's TGT in $CLIENTS/krb5cc_$ALICE (0600 root)" \
    [ "$(mode_of "$CLIENTS/krb5cc_$ALICE" 2>&1)" = "600 0" ]
klist -c "FILE:$CLIENTS/krb5cc_$ALICE" 2>&1 | grep -q "krbtgt/$REALM@$REALM" \
    || fail "no TGT in alice's daemon ccache"
user_case bob $BOB "daemon-owned ccache mode"
klist -c "FILE:$CLIENTS/krb5cc_$BOB" 2>&1 | grep -q "cifs/localhost@$REALM" \
    && pass "bob's service ticket was stored in his daemon ccache" \
    || fail "no cifs/localhost ticket in bob's daemon ccache"
check "still no ccache of the users' own" [ ! -e /tmp/krb5cc_$ALICE -a ! -e /tmp/krb5cc_$BOB ]

# --- what the daemon saw ---------------------------------------------------------------
if [ "$GP_IMPL" = py ]; then
    for uid in $ALICE $BOB; do
        check "daemon log: uid $uid connected as /usr/sbin/cifs.upcall (via env, exec'd)" \
            grep -Eq "accepted on $SOCK: pid [0-9]+ uid $uid gid [0-9]+ program /usr/sbin/cifs.upcall$" "$DLOG"
    done
    check "daemon log: INIT_SEC_CONTEXT served by service 'cifs-upcall'" \
        grep -q "INIT_SEC_CONTEXT: service 'cifs-upcall'" "$DLOG"
    check "daemon log: no GSS failure" not grep -q "GSS failure" "$DLOG"
else
    check "daemon log: a connection matched service cifs-upcall" grep -qi "cifs-upcall" "$DLOG"
fi
check "cifs.upcall went through GSSAPI (syslog)" grep -q "handle_krb5_mech: using GSS-API" "$W/syslog"
grep -E "accepted on|cifs-upcall|GSS failure" "$DLOG" | cut -c1-200 | head -n 12

for name in alice bob; do umount "$MNT-$name" || fail "umount $MNT-$name"; done

# --- negative: no daemon, no mount ----------------------------------------------------
kill "$daemon_pid"
wait "$daemon_pid" 2>/dev/null
say "daemon stopped; mounting as alice again"
if mount_as neg $ALICE 2>"$W/neg-mount.log"; then
    fail "the mount as alice succeeded with the daemon stopped"
    umount "$MNT-neg"
else
    pass "with the daemon stopped, the mount as alice fails ($(tr '\n' ' ' <"$W/neg-mount.log"))"
fi
exit $failed
