#!/usr/bin/env bash
# Builds the tiny guest of kubenova's qemu tests with no download beyond Debian packages:
# the kernel of Debian's linux-image-amd64 (extracted, never installed: installing pulls
# systemd and udev) and an initramfs of busybox-static whose /init prints a marker on the
# serial console, runs a shell there, powers off on the ACPI power button, and ticks.
# Cached under ~/.cache/kubenova/tiny-guest/<key>/; prints that folder on its last line.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${KUBENOVA_CACHE:-$HOME/.cache/kubenova}
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
pkg=$(kernel_pkg)
if [[ -z "$pkg" ]]; then  # a machine whose package lists were never fetched
  apt-get update -qq >/dev/null
  pkg=$(kernel_pkg)
fi
[[ -n "$pkg" ]] || { echo "tiny-guest: linux-image-amd64 names no kernel package" >&2; exit 1; }
key=$( (cat "$0"; echo "$pkg") | sha256sum | cut -c1-12)
out="$cache/tiny-guest/$key"
if [[ -f "$out/vmlinuz" && -f "$out/initrd.img" ]]; then
  echo "$out"
  exit 0
fi
command -v busybox >/dev/null && [[ -x /bin/busybox ]] || {
  echo "tiny-guest: /bin/busybox (busybox-static) is missing; run hack/setup" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"  # apt downloads as _apt
(cd "$work" && apt-get download -q "$pkg" >/dev/null)
dpkg-deb --fsys-tarfile "$work"/*.deb | tar -x -C "$work" --wildcards \
  './boot/vmlinuz-*' '*/drivers/acpi/button.ko' '*/drivers/input/evdev.ko'

root="$work/initramfs"
mkdir -p "$root"/{bin,sbin,proc,sys,dev,etc/acpi/PWRF,lib/modules,tmp}
cp /bin/busybox "$root/bin/busybox"
for m in button evdev; do
  find "$work/lib/modules" -name "$m.ko" -exec cp {} "$root/lib/modules/" \;
done
cat >"$root/etc/acpi/PWRF/00000080" <<'SH'
#!/bin/busybox sh
/bin/busybox poweroff -f
SH
chmod +x "$root/etc/acpi/PWRF/00000080"
cat >"$root/init" <<'SH'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
insmod /lib/modules/evdev.ko 2>/dev/null
insmod /lib/modules/button.ko 2>/dev/null
acpid -d >/dev/null 2>&1 &
echo "KUBENOVA-GUEST-READY"
# A shell on the serial port for `kubectl vm console`: it runs each line typed there (the
# terminal echoes it). No prompt and no line editing, whose prompts and escape sequences
# would share lines with the ticks; the ticks go on beside it.
setsid sh -c 'exec </dev/ttyS0 >/dev/ttyS0 2>&1; trap "" INT; echo KUBENOVA-GUEST-SHELL
  while read -r line; do eval "$line"; done' &
n=0
while true; do n=$((n+1)); echo "tick $n"; sleep 1; done
SH
chmod +x "$root/init"
mkdir -p "$out.partial"
cp "$work"/boot/vmlinuz-* "$out.partial/vmlinuz"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out.partial/initrd.img"
rm -rf "$out" && mv "$out.partial" "$out"
echo "$out"
