#!/usr/bin/env bash
# Boots Debian's kernel (which has IPVS as modules) under qemu with a small
# busybox initramfs and runs one program in it: lbha's real-kernel test tier.
# This machine's kernel has no IPVS and cannot load modules; qemu's TCG needs
# neither KVM nor anything from the host kernel.
#
#   scripts/qemu/run.sh [-f FILE]... PROGRAM [ARG]...
#
# PROGRAM (a static binary, e.g. a `CGO_ENABLED=0 go test -c` test binary) and
# every FILE are copied to /lbha in the guest; PROGRAM runs there as root,
# after the IPVS modules are loaded and lo is up, with /sbin/ip (iproute2),
# /sbin/ipvsadm, bash and busybox on the PATH. Its output is the guest
# console; its exit status is this script's. 124: the guest ran out of time
# (LBHA_QEMU_TIMEOUT, default 600 s); 125: the guest never reported a status.
#
# Everything downloaded or built is cached under LBHA_QEMU_CACHE (default
# /var/cache/lbha-qemu): the kernel package (unpacked, never installed) and
# the base initramfs, rebuilt when its inputs change. Needs, once:
#   apt-get install qemu-system-x86 busybox-static ipvsadm cpio kmod
# (scripts/qemu/setup.sh does it). LBHA_QEMU_TOOLS="tcpdump ..." adds host
# programs to the guest, with their libraries, for debugging.
set -euo pipefail

cache=${LBHA_QEMU_CACHE:-/var/cache/lbha-qemu}
timeout_s=${LBHA_QEMU_TIMEOUT:-600}
flavour=${LBHA_QEMU_KERNEL:-cloud-amd64}   # the cloud flavour boots fastest
modules="ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_sed ip_vs_nq ip_vs_sh ip_vs_dh ip_vs_mh ip_vs_fo ip_vs_ovf ip_vs_lblc ip_vs_lblcr ip_vs_ftp ip_vs_pe_sip veth bridge dummy"

extra=()
while [ $# -gt 0 ]; do
	case $1 in
	-f) extra+=("$2"); shift 2 ;;
	-h | --help) sed -n '2,20p' "$0"; exit 0 ;;
	*) break ;;
	esac
done
[ $# -ge 1 ] || { echo "usage: $0 [-f FILE]... PROGRAM [ARG]..." >&2; exit 2; }
prog=$1; shift
note() { echo "qemu: $*" >&2; }
for tool in qemu-system-x86_64 busybox ipvsadm cpio depmod modprobe; do
	command -v $tool >/dev/null || { echo "qemu: $tool missing; run scripts/qemu/setup.sh" >&2; exit 2; }
done
start=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - start) / 1000000 )) ms"; }

# The kernel: the versioned package behind Debian's meta package, unpacked
# into the cache. Installing it would pull initramfs-tools and udev.
mkdir -p "$cache"
pkg=$(apt-cache depends "linux-image-$flavour" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
[ -n "$pkg" ] || { echo "qemu: cannot resolve linux-image-$flavour (apt-get update?)" >&2; exit 2; }
root=$cache/$pkg
if [ ! -d "$root/boot" ]; then
	note "fetching $pkg"
	tmp=$(mktemp -d "$cache/fetch.XXXXXX")
	(cd "$tmp" && apt-get -q -o APT::Sandbox::User=root download "$pkg" >/dev/null)
	dpkg-deb -x "$tmp"/*.deb "$tmp/root"
	mv "$tmp/root" "$root"
	rm -rf "$tmp"
fi
vmlinuz=$(ls "$root"/boot/vmlinuz-* | head -n 1)
kver=${vmlinuz##*/vmlinuz-}
[ -f "$root/lib/modules/$kver/modules.dep" ] || depmod -b "$root" "$kver"

# The base initramfs, keyed by everything that goes into it.
# LBHA_QEMU_TOOLS adds host programs (with their libraries), e.g. tcpdump
# while debugging a guest test.
tools=("$(command -v ip)" "$(command -v ipvsadm)" "$(command -v bash)")
for t in ${LBHA_QEMU_TOOLS:-}; do tools+=("$(command -v "$t")"); done
key=$({ echo "$kver $modules"; sha256sum "$0" "$(command -v busybox)" "${tools[@]}"; } | sha256sum | cut -c1-16)
base=$cache/base-$key.cpio.gz
if [ ! -f "$base" ]; then
	note "building the base initramfs"
	st=$(mktemp -d "$cache/stage.XXXXXX")
	mkdir -p "$st"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,lbha,root,lib/modules/$kver}
	ln -s /run "$st/var"
	cp "$(command -v busybox)" "$st/bin/busybox"
	chroot "$st" /bin/busybox --install -s 2>/dev/null || true
	# iproute2's ip (busybox's has no netns), ipvsadm and bash, with their
	# libraries.
	for t in "${tools[@]}"; do
		dst=$st/sbin/${t##*/}
		[ "${t##*/}" = bash ] && dst=$st/bin/bash
		rm -f "$dst"; cp "$t" "$dst"
		ldd "$t" | grep -o '/[^ ]*' | while read -r lib; do
			mkdir -p "$st$(dirname "$lib")"; cp -L "$lib" "$st$lib"
		done
	done
	# Modules in dependency order, as modprobe would load them.
	for m in $modules; do
		modprobe -d "$root" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
	done | awk '!seen[$0]++' | while read -r ko; do
		rel=${ko#"$root/lib/modules/$kver/"}
		mkdir -p "$st/lib/modules/$kver/$(dirname "$rel")"
		cp "$ko" "$st/lib/modules/$kver/$rel"
		echo "$rel" >>"$st/etc/modules-order"
	done
	echo "$kver" >"$st/etc/kver"
	echo "root:x:0:0:root:/root:/bin/sh" >"$st/etc/passwd"
	cat >"$st/init" <<'INIT'
#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs run /run; mount -t tmpfs tmp /tmp
mkdir -p /run/netns
kver=$(cat /etc/kver)
while read -r m; do
	insmod "/lib/modules/$kver/$m" 2>/dev/null || echo "lbha-guest: insmod $m failed"
done </etc/modules-order
ip link set lo up
cd /lbha
/bin/bash /lbha/.lbha-run
echo "lbha-guest-exit=$?"
poweroff -f
INIT
	chmod 755 "$st/init"
	(cd "$st" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) >"$base.tmp"
	mv "$base.tmp" "$base"
	rm -rf "$st"
fi

# This run's files, in a second archive appended to the base one.
run=$(mktemp -d "$cache/run.XXXXXX")
trap 'rm -rf "$run"' EXIT
mkdir -p "$run/ov/lbha"
cp "$prog" "$run/ov/lbha/"
for f in "${extra[@]}"; do cp "$f" "$run/ov/lbha/"; done
{
	echo "export LBHA_QEMU_GUEST=1"
	printf 'exec /lbha/%q' "${prog##*/}"
	for a in "$@"; do printf ' %q' "$a"; done
	echo
} >"$run/ov/lbha/.lbha-run"
(cd "$run/ov" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) >"$run/ov.cpio.gz"
cat "$base" "$run/ov.cpio.gz" >"$run/initrd.gz"
note "kernel $kver, ready in $(elapsed); booting"

# -nic none: the guest has no network to the outside at all.
set +e
timeout -k 5 "$timeout_s" qemu-system-x86_64 -accel tcg -M pc -cpu max -m 1024 -smp 2 \
	-nodefaults -no-user-config -display none -no-reboot -nic none -serial stdio \
	-kernel "$vmlinuz" -initrd "$run/initrd.gz" -append "console=ttyS0 panic=-1 quiet" </dev/null |
	tr -d '\r' | tee "$run/console"
qrc=${PIPESTATUS[0]}
set -e
rc=$(sed -n 's/^lbha-guest-exit=\([0-9]*\)$/\1/p' "$run/console" | tail -n 1)
note "guest done in $(elapsed)"
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then note "timed out after ${timeout_s}s"; exit 124; fi
[ -n "$rc" ] || { note "the guest reported no exit status"; exit 125; }
exit "$rc"
