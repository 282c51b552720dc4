#!/bin/bash
# Build the pieces of the kernel VM test under build/kernel-vm (never committed):
# the Debian kernel named by linux-image-amd64, its modules (depmod'ed in place)
# and a busybox initramfs whose /init shares the host's / read-only over 9p.
#
# Idempotent: a stamp per kernel version and a hash of the /init template make
# a second run cost nothing. Prints the kernel version on the last line.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${KVM_BUILD_DIR:-$repo/build/kernel-vm}
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo

# Packages the host needs to build and boot the guest, plus what the guest runs
# from the shared root (NFS server and client tools, a KDC, the C gssproxy).
pkgs="qemu-system-x86 busybox-static kmod nfs-kernel-server nfs-common keyutils
      krb5-kdc krb5-admin-server krb5-user gssproxy iproute2"
missing=$(for p in $pkgs; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
done)
if [ -n "$missing" ]; then
    echo "kernel-vm: installing" $missing >&2
    $sudo apt-get update -qq
    # policy-rc.d (or the lack of systemd) keeps the installed daemons from starting.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        $missing >/dev/null
fi

# The kernel the linux-image-amd64 metapackage points at, e.g. linux-image-6.1.0-56-amd64.
image=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$image" ]; then
    echo "kernel-vm: cannot tell which kernel linux-image-amd64 depends on" >&2
    exit 1
fi
kver=${image#linux-image-}
kdir=$out/$kver
mkdir -p "$kdir"
# Two test runs at once (several engineers, one checkout) build one at a time.
exec 9>"$out/.build.lock"
flock 9

if [ ! -e "$kdir/kimg.stamp" ]; then
    echo "kernel-vm: fetching $image" >&2
    rm -rf "$kdir/kimg" "$kdir"/*.deb
    # apt-get download writes into the current directory; _apt cannot write
    # there, which only costs a harmless "unsandboxed" warning.
    (cd "$kdir" && apt-get download -q "$image" 2>&1 | grep -v unsandboxed >&2 || true)
    deb=$(ls "$kdir"/"$image"_*.deb)
    dpkg -x "$deb" "$kdir/kimg"
    depmod -b "$kdir/kimg" "$kver"
    rm -f "$deb"
    touch "$kdir/kimg.stamp"
fi

# The initramfs: busybox, the modules needed to reach the host's / (virtio 9p)
# and to layer writable /etc and /var over it (overlay), and /init.
init_hash=$(cat "$here/init.sh" "$0" | sha256sum | cut -c1-16)
initrd=$kdir/initrd-$init_hash.img
if [ ! -e "$initrd" ]; then
    echo "kernel-vm: building initramfs" >&2
    stage=$kdir/initrd.d
    rm -rf "$stage" "$kdir"/initrd-*.img
    mkdir -p "$stage"/{bin,sbin,mods,proc,sys,dev,host,ovl}
    cp /bin/busybox "$stage/bin/busybox"
    : >"$stage/mods/order"
    for m in virtio_pci 9pnet_virtio 9p overlay; do
        modprobe -d "$kdir/kimg" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
    done | awk '!seen[$0]++' | while read -r ko; do
        cp "$ko" "$stage/mods/"
        basename "$ko" >>"$stage/mods/order"
    done
    # The kernel's usermode helpers (request_module, request_key) run in the
    # initramfs root, not in the guest's chroot: forward them to the host's
    # tools, which find the guest kernel's modules with -d.
    printf '#!/bin/busybox sh\nexec /bin/busybox chroot /host /sbin/modprobe -d %s "$@"\n' \
        "$kdir/kimg" >"$stage/sbin/modprobe"
    printf '#!/bin/busybox sh\nexec /bin/busybox chroot /host /sbin/request-key "$@"\n' \
        >"$stage/sbin/request-key"
    cp "$here/init.sh" "$stage/init"
    chmod 755 "$stage/init" "$stage/sbin/modprobe" "$stage/sbin/request-key"
    (cd "$stage" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$initrd.tmp"
    mv "$initrd.tmp" "$initrd"
    rm -rf "$stage"
fi
ln -sf "$(basename "$initrd")" "$kdir/initrd.img"
ln -sf "kimg/boot/vmlinuz-$kver" "$kdir/vmlinuz"
echo "$kver"
