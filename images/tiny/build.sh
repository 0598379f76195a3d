#!/usr/bin/env bash
# Builds Ursa's tiny test guest from Debian packages (linux-image-amd64,
# busybox-static): OUT/vmlinuz and OUT/initramfs.cpio.gz (busybox, the
# virtio modules, images/tiny/init), and, where syslinux, mtools and
# dosfstools are installed, OUT/tiny.raw: a bootable raw disk (a FAT file
# system with syslinux, the kernel and the initramfs) that boots as a cloud
# guest (`ursa.cloud`). Usage: build.sh OUT
set -euo pipefail
out=${1:?usage: build.sh OUT}
here=$(cd "$(dirname "$0")" && pwd)
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1)
[ -n "$kernel" ] || { echo "no /boot/vmlinuz-*: apt-get install linux-image-amd64" >&2; exit 2; }
ver=${kernel#/boot/vmlinuz-}
bb=/bin/busybox
[ -x $bb ] || { echo "no busybox: apt-get install busybox-static" >&2; exit 2; }
ldd $bb >/dev/null 2>&1 && { echo "busybox is not static: apt-get install busybox-static" >&2; exit 2; }
mkdir -p "$out"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt,etc}
cp $bb "$root/bin/busybox"
cp "$here/init" "$root/init"
chmod +x "$root/init"
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev \
         drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/block/virtio_blk \
         net/core/failover drivers/net/net_failover drivers/net/virtio_net \
         fs/fat/fat fs/fat/vfat fs/nls/nls_cp437 fs/nls/nls_ascii fs/nls/nls_iso8859-1 fs/nls/nls_utf8; do
  src=/lib/modules/$ver/kernel/$m.ko
  for ext in "" .xz .zst; do
    if [ -f "$src$ext" ]; then
      mkdir -p "$root/$(dirname "lib/modules/$ver/kernel/$m")"
      case $ext in
        "") cp "$src" "$root/lib/modules/$ver/kernel/$m.ko" ;;
        .xz) xz -dc "$src$ext" > "$root/lib/modules/$ver/kernel/$m.ko" ;;
        .zst) zstd -dcq "$src$ext" > "$root/lib/modules/$ver/kernel/$m.ko" ;;
      esac
    fi
  done
done
cp "$kernel" "$out/vmlinuz"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initramfs.cpio.gz"
echo "$out/vmlinuz $out/initramfs.cpio.gz ($ver)"
if command -v syslinux >/dev/null && command -v mcopy >/dev/null && command -v mkfs.vfat >/dev/null; then
  disk="$out/tiny.raw"
  rm -f "$disk"
  truncate -s 40M "$disk"
  mkfs.vfat -n URSATINY "$disk" >/dev/null
  syslinux --install "$disk"
  printf 'DEFAULT ursa\nPROMPT 0\nTIMEOUT 0\nLABEL ursa\n  KERNEL /vmlinuz\n  APPEND initrd=/initrd.gz console=ttyS0 ursa.cloud quiet\n' > "$root/syslinux.cfg"
  mcopy -i "$disk" "$out/vmlinuz" ::/vmlinuz
  mcopy -i "$disk" "$out/initramfs.cpio.gz" ::/initrd.gz
  mcopy -i "$disk" "$root/syslinux.cfg" ::/syslinux.cfg
  echo "$disk (bootable raw disk)"
else
  echo "no tiny.raw: apt-get install syslinux syslinux-common mtools dosfstools" >&2
fi
