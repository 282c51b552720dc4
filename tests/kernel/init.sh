#!/bin/busybox sh
# /init of the kernel-test initramfs. The host's / arrives read-only over 9p
# (tag "host"); /etc and /var get a throwaway writable layer (the NFS and
# Kerberos tools write there) and so does /tmp, /run is a tmpfs, and the run directory
# (tag "share") is writable at /tmp/share. The test itself is
# /tmp/share/guest.sh, run chrooted in the host's tree; its exit status is
# printed as KVM_GUEST_RC= because qemu's own exit status says nothing.
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /mods/order); do
    insmod "/mods/$m" || echo "init: insmod $m failed"
done
# cache=loose: the host tree does not change under a test run, and every
# Python import is a handful of 9p round trips otherwise.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose host /host \
    || { echo "init: cannot mount the host root"; echo "KVM_GUEST_RC=99"; poweroff -f; }
mount -t tmpfs ovl /ovl
# /tmp too: the repository (its .venv and build/) may itself live under the
# host's /tmp (CI's fresh clones do), so the guest must still see it there.
for d in etc var tmp; do
    mkdir -p "/ovl/$d/upper" "/ovl/$d/work"
    mount -t overlay -o "lowerdir=/host/$d,upperdir=/ovl/$d/upper,workdir=/ovl/$d/work" \
        "ovl-$d" "/host/$d" || echo "init: overlay on /$d failed"
done
for d in proc sys dev; do mount --bind "/$d" "/host/$d"; done
mount -t tmpfs run /host/run
# Kernel threads keep the initramfs as their root, not the guest's chroot: an
# nfsd thread that reconnects the gss-proxy upcall (after the daemon closed
# the connection) looks up /var/run/gssproxy.sock here, so /var/run must be
# the guest's /run as on a real system.
mkdir -p /var && ln -s /host/run /var/run
chmod 1777 /host/tmp
mkdir -p /host/tmp/share
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 share /host/tmp/share
chroot /host /bin/bash /tmp/share/guest.sh
echo "KVM_GUEST_RC=$?"
sync
poweroff -f
