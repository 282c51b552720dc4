#!/bin/bash
# The kernel test proper, run as root inside the guest (see init.sh): the real
# nfsd gss-proxy upcall against the daemon under test (GP_IMPL=py: gssproxy-py,
# GP_IMPL=c: /usr/sbin/gssproxy), then a real NFSv4.2 sec=krb5 mount over
# loopback with rpc.gssd as the client side and the daemon as the server-side
# acceptor (no rpc.svcgssd anywhere); with gssproxy-py, then the kernel's
# reconnection after the daemon closed its idle connection and a second mount,
# then, restarted at debug level 1, two more mounts whose later accepts the
# direct path (gss/direct.py) serves, as the status counters say.
#
# Prints PASS:/FAIL: lines; exits non-zero if any check failed. Logs are
# copied to /tmp/share (the host's run directory) on the way out.
set -u
. /tmp/share/env

W=/tmp/kt
SOCK=/run/gssproxy.sock
PROC=/proc/net/rpc/use-gss-proxy
REALM=EXAMPLE.TEST
EXPORT=/tmp/export
MNT=/tmp/mnt
MAPPED_USER=daemon # nfs/localhost maps to this local user (auth_to_local)
. /tmp/share/guest-lib.sh
finish() {
    mountpoint -q "$MNT" && umount -f "$MNT"
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.2
    cp "$W"/*.log /tmp/share/ 2>/dev/null
    dmesg >/tmp/share/dmesg.log
    say "guest done, failed=$failed"
    exit $failed
}
trap finish EXIT
mkdir -p "$W" "$MNT"

say "guest up: kernel $(uname -r), daemon under test: $GP_IMPL"
ip link set lo up
hostname localhost

# --- modules: nfsd brings sunrpc and auth_rpcgss, hence the proc file ------
modprobe -d "$KIMG" -a nfsd rpcsec_gss_krb5 nfsv4 || fail "modprobe nfsd rpcsec_gss_krb5 nfsv4"
state=$(cat "$PROC" 2>&1)
check "use-gss-proxy reads -1 before any daemon runs (got '$state')" [ "$state" = "-1" ]

# --- NFS server: exports a tmpfs, krb5 only --------------------------------
# Started this early so its grace period (10 s, the minimum) runs out while
# the rest is set up. Running nfsd does not decide the upcall mode; only the
# first RPCSEC_GSS context setup it handles does, and no client exists yet.
mount -t nfsd nfsd /proc/fs/nfsd
mkdir -p /run/rpcbind /var/lib/nfs /run/rpc_pipefs "$EXPORT"
bg "$W/rpcbind.log" rpcbind -w -f
mount -t tmpfs -o mode=1777 export "$EXPORT"
echo "$EXPORT localhost(rw,sec=krb5,no_subtree_check,fsid=0,no_root_squash,insecure)" >/etc/exports
exportfs -ra || fail "exportfs -ra"
bg "$W/mountd.log" rpc.mountd -F -N 3
mount -t rpc_pipefs sunrpc /run/rpc_pipefs
bg "$W/idmapd.log" rpc.idmapd -f -vvv
# A 10 s grace period and lease: nothing to reclaim on a fresh boot.
rpc.nfsd -G 10 -L 10 -N 3 4 || fail "rpc.nfsd"
say "nfsd started"

# --- gssproxy_py.netns against the real per-namespace switch (no daemon) --
ip netns add kt-ok && ip netns add kt-nolistener || fail "ip netns add"
say "netns checks (UpcallEnabler in kt-ok and kt-nolistener)"
PYTHONPATH="$REPO" "$PY" "$REPO/tests/kernel/guest_upcall.py" kt-ok kt-nolistener \
    || fail "gssproxy_py.netns checks in the guest"
# Deleting the namespaces drops their kernel clients, which would otherwise
# keep reconnecting to whatever listens on the socket next.
ip netns del kt-ok; ip netns del kt-nolistener
rm -f "$SOCK"
state=$(cat "$PROC" 2>&1)
check "use-gss-proxy of the guest's own namespace still reads -1 (got '$state')" [ "$state" = "-1" ]

# --- Kerberos: a KDC on the guest's loopback, nfs/localhost in the keytab ---
cat >/etc/krb5.conf <<KRB5
[libdefaults]
    default_realm = $REALM
    dns_lookup_realm = false
    dns_lookup_kdc = false
    rdns = false
    udp_preference_limit = 1
[realms]
    $REALM =
    {
        kdc = 127.0.0.1:88
        auth_to_local_names =
        {
            nfs/localhost = $MAPPED_USER
        }
        auth_to_local = DEFAULT
    }
[domain_realm]
    localhost = $REALM
KRB5
mkdir -p "$W/db"
: >"$W/db/kadm5.acl"
cat >"$W/kdc.conf" <<KDC
[kdcdefaults]
    kdc_listen = 127.0.0.1:88
    kdc_tcp_listen = 127.0.0.1:88
[realms]
    $REALM =
    {
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
kadmin.local -q "addprinc -randkey nfs/localhost@$REALM" >/dev/null 2>&1
kadmin.local -q "ktadd -k /etc/krb5.keytab nfs/localhost@$REALM" >/dev/null 2>&1
bg "$W/krb5kdc.log" krb5kdc -n
say "KDC started"

# --- the daemon under test: it must listen first, then write 1 itself ------
mkdir -p "$W/conf.d"
cat >"$W/gssproxy.conf" <<CONF
[gssproxy]
  debug_level = 2
[service/nfs-server]
  mechs = krb5
  socket = $SOCK
  cred_store = keytab:/etc/krb5.keytab
  trusted = yes
  kernel_nfsd = yes
  euid = 0
CONF
DLOG=$W/daemon.log
case $GP_IMPL in
c)
    mkdir -p /var/lib/gssproxy/rcache /var/lib/gssproxy/clients
    bg "$DLOG" /usr/sbin/gssproxy -i -d --debug-level=3 -c "$W/gssproxy.conf" -C "$W/conf.d" -s "$SOCK"
    ;;
py)
    bg "$DLOG" env PYTHONPATH="$REPO" "$PY" -m gssproxy_py.server.cli -i --debug-level=2 \
        -c "$W/gssproxy.conf" -C "$W/conf.d" -s "$SOCK"
    ;;
*) fail "unknown GP_IMPL=$GP_IMPL"; exit 1 ;;
esac
daemon_pid=${pids[-1]}
say "daemon started (pid $daemon_pid), waiting for it to say it is ready"
is_ready() { grep -q "Initialization complete" "$DLOG"; }
if ! wait_for 90 is_ready; then
    fail "the daemon did not log 'Initialization complete' within 90 s"
    tail -n 30 "$DLOG"
    exit 1
fi
say "daemon ready"
# Both daemons write the switch after listening and before announcing
# readiness, so it must already read 1 now; the guest script never writes it.
state=$(cat "$PROC")
if [ "$state" = 1 ]; then
    pass "use-gss-proxy reads 1 once the daemon is ready (written by the daemon itself)"
else
    fail "use-gss-proxy reads '$state' although the daemon is ready"
    tail -n 30 "$DLOG"
    kill -0 "$daemon_pid" 2>/dev/null || exit 1
    # Go on with the NFS part anyway (the verdict is already FAIL), so one
    # run also tells whether the daemon's acceptor side works.
    say "enabling the upcall from outside the daemon to test the rest"
    PYTHONPATH="$REPO" "$PY" -m gssproxy_py.netns enable || exit 1
fi
if [ "$GP_IMPL" = py ]; then
    # gssproxy-py logs through gssproxy_py.netns.upcall: the state it read and
    # its write, which must come after it listens and before it is ready.
    line_of() { grep -n -m1 "$1" "$DLOG" | cut -d: -f1; }
    l_listen=$(line_of "listening on $SOCK")
    l_wrote=$(line_of "use-gss-proxy: .* read -1 (undecided); wrote 1")
    l_ready=$(line_of "Initialization complete")
    check "daemon log: it read -1 and wrote 1 itself (line ${l_wrote:-none})" [ -n "$l_wrote" ]
    in_order() { [ -n "$1" ] && [ -n "$2" ] && [ -n "$3" ] && [ "$1" -lt "$2" ] && [ "$2" -lt "$3" ]; }
    check "daemon log order: listening (${l_listen:-?}) < wrote 1 (${l_wrote:-?}) < ready (${l_ready:-?})" \
        in_order "$l_listen" "$l_wrote" "$l_ready"
fi
check "the daemon is still running after the kernel's NULL call" kill -0 "$daemon_pid"
# The kernel's client socket: the server side of it is an established
# connection on $SOCK. Remember its inode; after the mount it must be the
# same one (the NULL call did not make anyone drop or redo the connection).
# gssproxy-py binds at $SOCK itself in a directory only root can write; in
# one others can write it binds in a private directory beside the path and
# renames the socket over it (server/listeners.py), and the name the kernel
# keeps for the socket, which ss shows, is then .gp-XXXX/s next to $SOCK.
kconn() {
    ss -xH | awk -v sock="$SOCK" -v tmp="${SOCK%/*}/.gp-" \
        '$2 == "ESTAB" && ($5 == sock || index($5, tmp) == 1) {print $6}' | sort
}
conn_before=$(kconn)
check "one established connection on $SOCK after the enable (inodes: ${conn_before//$'\n'/ })" \
    [ "$(echo "$conn_before" | grep -c .)" = 1 ]

# --- NFS client: rpc.gssd gets a ticket for root from the keytab ----------
bg "$W/gssd.log" rpc.gssd -f -vvv -rrr
sleep 0.5
say "mounting localhost:/ with sec=krb5,vers=4.2"
if mount -t nfs4 -o sec=krb5,vers=4.2 localhost:/ "$MNT"; then
    pass "NFSv4.2 sec=krb5 mount of localhost:/ (rpc.gssd client, $GP_IMPL acceptor)"
else
    fail "NFSv4.2 sec=krb5 mount of localhost:/"
    exit 1
fi
check "the mount really is krb5" grep -q "$MNT nfs4 .*sec=krb5" /proc/mounts
payload="written through sec=krb5 at $(now) by $GP_IMPL"
say "writing a file"
echo "$payload" >"$MNT/hello.txt" || fail "write $MNT/hello.txt"
sync
check "read back over NFS equals what was written" [ "$(cat "$MNT/hello.txt")" = "$payload" ]
check "the exported tmpfs holds the same bytes" [ "$(cat "$EXPORT/hello.txt")" = "$payload" ]
# nfsd created the file with the creds the daemon mapped for nfs/localhost.
owner=$(stat -c %u "$EXPORT/hello.txt")
want=$(id -u "$MAPPED_USER")
check "nfsd used the daemon's mapped creds: owner uid $owner = $MAPPED_USER ($want)" [ "$owner" = "$want" ]
conn_after=$(kconn)
check "the kernel's connection survived the upcall (same inode ${conn_before//$'\n'/ })" \
    [ "$conn_after" = "$conn_before" ]

# --- what the daemon saw --------------------------------------------------
case $GP_IMPL in
c)
    check "daemon log shows the kernel's ACCEPT_SEC_CONTEXT" grep -q "GSSX_ACCEPT_SEC_CONTEXT" "$DLOG"
    ;;
py)
    check "daemon log shows the kernel's ACCEPT_SEC_CONTEXT" grep -q "ACCEPT_SEC_CONTEXT" "$DLOG"
    check "daemon log shows the creds it mapped (uid $want)" grep -Eiq "creds.*uid[ =:]+$want\b" "$DLOG"
    ;;
esac
grep -E "ACCEPT_SEC_CONTEXT|linux_creds|use-gss-proxy" "$DLOG" | cut -c1-160 | head -n 12
umount "$MNT" && pass "umount"

# --- the kernel reconnects after the daemon closed its idle connection -----
# gssproxy-py only (the C gssproxy has no idle_connection_timeout): a reload
# shortens the timeout, the daemon closes the kernel's connection once the
# upcall has been quiet that long, and a second mount makes nfsd set up a new
# context: the kernel must connect again and get its ACCEPT served there.
[ "$GP_IMPL" = py ] || exit $failed
IDLE=2
conn_of() { sed -n "s/^.*\[conn \([0-9]*\) xid [^]]*\] $1.*$/\1/p" "$DLOG"; }
# The kernel's connection is the one the daemon has open: nothing else
# connects to $SOCK in this guest.
open_conn() {
    local k
    k=$(sed -n "s|^.*\[conn \([0-9]*\)\] accepted on $SOCK: .*$|\1|p" "$DLOG" | tail -n1)
    [ -n "$k" ] && ! grep -q "\[conn $k\] clos" "$DLOG" && echo "$k"
}
sed -i "s/^\[gssproxy\]$/&\n  idle_connection_timeout = $IDLE/" "$W/gssproxy.conf"
reloads() { grep -c "New config loaded successfully" "$DLOG"; }
reloads_before=$(reloads)
kill -HUP "$daemon_pid"
reloaded() { [ "$(reloads)" -gt "$reloads_before" ]; }
check "the daemon reloaded with idle_connection_timeout = $IDLE" wait_for 30 reloaded
# The reload writes use-gss-proxy again, which makes the kernel replace its
# client and hence its connection: wait for the one it has now.
wait_for 10 open_conn >/dev/null
kernel_conn=$(open_conn)
check "the kernel is connected after the reload (connection ${kernel_conn:-none})" [ -n "$kernel_conn" ]
idle_closed() { grep -q "\[conn $kernel_conn\] closing: idle for ${IDLE}s" "$DLOG"; }
say "waiting for the daemon to close the kernel's idle connection"
check "daemon log: it closed the kernel's connection ${kernel_conn:-none} as idle" wait_for 30 idle_closed
no_kconn() { [ -z "$(kconn)" ]; }
check "no established connection on $SOCK once the daemon closed it" wait_for 10 no_kconn
accepts_before=$(conn_of GSSX_ACCEPT_SEC_CONTEXT | wc -l)
say "mounting again: a new client, a new context, a new upcall"
if mount -t nfs4 -o sec=krb5,vers=4.2 localhost:/ "$MNT"; then
    pass "second NFSv4.2 sec=krb5 mount after the idle close"
    check "the file written before reads back" [ "$(cat "$MNT/hello.txt")" = "$payload" ]
    umount "$MNT" && pass "second umount"
else
    fail "second NFSv4.2 sec=krb5 mount after the idle close"
fi
new_conn=$(conn_of GSSX_ACCEPT_SEC_CONTEXT | tail -n +$((accepts_before + 1)) | head -n1)
check "the daemon served a new ACCEPT from the kernel on a new connection (${new_conn:-none} after $kernel_conn)" \
    test -n "$new_conn" -a "$new_conn" != "$kernel_conn"
# SO_PEERCRED names the task that connected: the kernel reconnects from the
# nfsd thread that needed the upcall (the first time it was the daemon itself,
# writing use-gss-proxy).
new_pid=$(sed -n "s/^.*\[conn ${new_conn:-x}\] accepted on [^:]*: pid \([0-9]*\) .*$/\1/p" "$DLOG")
new_comm=$(cat "/proc/${new_pid:-0}/comm" 2>/dev/null)
check "the new connection came from an nfsd thread (pid ${new_pid:-none}, comm ${new_comm:-none})" \
    [ "$new_comm" = nfsd ]
grep -E "\[conn (${kernel_conn:-x}|${new_conn:-x})[] ]" "$DLOG" | cut -c1-160 | head -n 12

# --- the direct path serves the kernel's accept (gss/direct.py) -------------
# Above, the daemon runs at debug level 2, where every call takes the generic
# path (its lines describe the typed arguments), and each mount's accept was
# the first after a start or reload: an acquire-cache miss, which the generic
# path serves (it acquires the default credential, pools it and looks the
# initiator's user up). Restarted at debug level 1, the same service gets two
# mounts, hence more accepts: the later ones find the credential in the
# acquire cache and the pool, and the direct path serves them; the admin
# socket's status counts them (calls_direct_total).
kill "$daemon_pid"
daemon_gone() { ! kill -0 "$daemon_pid"; }
check "the debug-level-2 daemon stopped" wait_for 30 daemon_gone
sed -i -e '/^  idle_connection_timeout = /d' -e 's/^  debug_level = 2$/  debug_level = 1/' "$W/gssproxy.conf"
DLOG=$W/daemon-direct.log
bg "$DLOG" env PYTHONPATH="$REPO" "$PY" -m gssproxy_py.server.cli -i --debug-level=1 \
    -c "$W/gssproxy.conf" -C "$W/conf.d" -s "$SOCK"
daemon_pid=${pids[-1]}
check "the daemon restarted at debug level 1 (pid $daemon_pid)" wait_for 90 is_ready
# counted FAMILY: nfs-server's ACCEPT_SEC_CONTEXT row of that counter in
# the status read last ($prom; 0 before the row's first call).
counted() {
    local n
    n=$(echo "$prom" | sed -n "s/^gssproxy_py_$1{service=\"nfs-server\",program=\"gssproxy\",procedure=\"GSSX_ACCEPT_SEC_CONTEXT\"} \([0-9]*\)$/\1/p")
    echo "${n:-0}"
}
for n in 1 2; do
    say "debug level 1: mount $n"
    if ! mount -t nfs4 -o sec=krb5,vers=4.2 localhost:/ "$MNT"; then
        fail "debug level 1: NFSv4.2 sec=krb5 mount $n"
        continue
    fi
    pass "debug level 1: NFSv4.2 sec=krb5 mount $n"
    check "debug level 1, mount $n: the first file reads back" [ "$(cat "$MNT/hello.txt")" = "$payload" ]
    echo "mount $n at debug level 1" >"$MNT/direct-$n.txt" && sync
    owner=$(stat -c %u "$EXPORT/direct-$n.txt" 2>/dev/null)
    check "debug level 1, mount $n: nfsd wrote with the mapped creds (owner ${owner:-none} = $want)" \
        [ "$owner" = "$want" ]
    umount "$MNT" || fail "debug level 1: umount $n"
done
# One status read (a python start costs about a second under TCG), checked
# against the daemon's own log: one line per ACCEPT it started.
prom=$(PYTHONPATH="$REPO" "$PY" -m gssproxy_py.admin.ctl status -c "$W/gssproxy.conf" \
    -C "$W/conf.d" -s "$SOCK" --format prometheus)
prom_calls=$(counted calls_total)
prom_direct=$(counted calls_direct_total)
logged=$(grep -c "GSSX_ACCEPT_SEC_CONTEXT: service 'nfs-server'" "$DLOG")
at_least() { [ "$1" -ge "$2" ]; }
as_logged() { [ "$prom_calls" = "$logged" ] && at_least "$prom_calls" 2; }
check "debug level 1: the status counts $prom_calls kernel ACCEPTs (>= 2; the log: $logged)" as_logged
check "debug level 1: $prom_direct of them served by the direct path (>= 1)" at_least "$prom_direct" 1
grep -E "ACCEPT_SEC_CONTEXT|linux_creds|inline" "$DLOG" | cut -c1-160 | head -n 12
