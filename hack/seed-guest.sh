#!/usr/bin/env bash
# Builds a guest that prints its cloud-init NoCloud seed on the serial console, for the test
# that SSH keys (spec.accessCredentials) reach the guest: the kernel of Debian's
# linux-image-amd64 (extracted, never installed) with the modules to read the IDE CD-ROM the
# agent attaches the seed as (scsi, libata, ata_piix, cdrom, sr_mod, isofs), and a busybox
# initramfs whose /init mounts /dev/sr0 and prints user-data and meta-data between markers,
# then idles. Cached under ~/.cache/kubenova/seed-guest/<key>/; prints that folder last.
set -euo pipefail

cache=${KUBENOVA_CACHE:-$HOME/.cache/kubenova}
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
pkg=$(kernel_pkg)
if [[ -z "$pkg" ]]; then  # a machine whose package lists were never fetched
  apt-get update -qq >/dev/null
  pkg=$(kernel_pkg)
fi
[[ -n "$pkg" ]] || { echo "seed-guest: linux-image-amd64 names no kernel package" >&2; exit 1; }
key=$( (cat "$0"; echo "$pkg") | sha256sum | cut -c1-12)
out="$cache/seed-guest/$key"
if [[ -f "$out/vmlinuz" && -f "$out/initrd.img" ]]; then
  echo "$out"
  exit 0
fi
[[ -x /bin/busybox ]] || { echo "seed-guest: /bin/busybox (busybox-static) is missing; run hack/setup" >&2; exit 1; }

# The order they must load in (the package ships no modules.dep: depmod makes it on install).
modules="scsi_common scsi_mod libata ata_piix cdrom sr_mod isofs"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"  # apt downloads as _apt
(cd "$work" && apt-get download -q "$pkg" >/dev/null)
dpkg-deb --fsys-tarfile "$work"/*.deb | tar -x -C "$work" --wildcards './boot/vmlinuz-*' \
  '*/kernel/drivers/ata/*' '*/kernel/drivers/scsi/*' '*/kernel/drivers/cdrom/*' '*/kernel/fs/isofs/*'

root="$work/initramfs"
mkdir -p "$root"/{bin,proc,sys,dev,mnt,lib/modules}
cp /bin/busybox "$root/bin/busybox"
for m in $modules; do
  found=$(find "$work/lib/modules" -name "$m.ko" | head -1)
  [[ -n "$found" ]] || { echo "seed-guest: $pkg has no $m.ko" >&2; exit 1; }
  cp "$found" "$root/lib/modules/"
done
cat >"$root/init" <<SH
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $modules; do
  insmod /lib/modules/\$m.ko || echo "SEED-GUEST: insmod \$m failed"
done
n=0
while [ ! -b /dev/sr0 ] && [ \$n -lt 300 ]; do sleep 0.1; n=\$((n+1)); done
if mount -t iso9660 -o ro /dev/sr0 /mnt; then
  for f in meta-data user-data; do
    echo "SEED-GUEST: \$f begin"
    cat /mnt/\$f
    echo "SEED-GUEST: \$f end"
  done
  umount /mnt
else
  echo "SEED-GUEST: no seed"
fi
while true; do sleep 1; done
SH
chmod +x "$root/init"
mkdir -p "$out.partial"
cp "$work"/boot/vmlinuz-* "$out.partial/vmlinuz"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out.partial/initrd.img"
rm -rf "$out" && mv "$out.partial" "$out"
echo "$out"
