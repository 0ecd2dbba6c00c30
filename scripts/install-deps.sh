#!/usr/bin/env bash
# Installs what the test suite needs on a Debian 12 machine that has only the Rust toolchain:
# QEMU (x86_64 and arm) and qemu-img, UEFI firmware (OVMF, AAVMF), Go for the cgo test,
# valgrind, pkg-config, CMake and binutils for the C library's install tests, dpkg-dev for the
# Debian packages, FAT tools for checking the cloud-init seed, the QEMU guest agent, the tools
# that build the cloud image fixture (debootstrap, mkfs.ext4, sfdisk, mtools, GRUB, zstd), the
# OpenSSH client that logs into it, python3-venv for the Python tests, and apt's package lists
# (with the arm64 architecture enabled) for the guest fixtures' packages.
# Installs nothing that is already present. Needs root (or sudo) for apt-get.
set -euo pipefail

# "test-that-must-succeed|package" pairs, in install order; a test may contain `||` itself
# (the package is what follows the last `|`).
checks=(
    "command -v qemu-system-x86_64|qemu-system-x86"
    "command -v qemu-system-aarch64|qemu-system-arm"
    # After qemu-system-*: on an image with a newer qemu-utils from backports, installing
    # Debian's QEMU can replace it, so qemu-img is checked again after them.
    "command -v qemu-img|qemu-utils"
    "[ -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || [ -e /usr/share/OVMF/OVMF_CODE.fd ]|ovmf"
    "command -v go|golang-go"
    "command -v valgrind|valgrind"
    "command -v pkg-config|pkg-config"
    "command -v cc|gcc"
    "command -v readelf|binutils"
    "command -v cmake|cmake"
    "command -v dpkg-shlibdeps|dpkg-dev"
    "[ -e /usr/include/stdio.h ]|libc6-dev"
    "command -v gzip|gzip"
    "command -v xz|xz-utils"
    "command -v fsck.fat|dosfstools"
    "command -v mtype|mtools"
    # The guest-agent tests run the host's qemu-ga as a peer, and pack it into the guest
    # fixture (its systemd unit only starts on a guest's virtio port, so it stays idle here).
    "[ -x /usr/sbin/qemu-ga ]|qemu-guest-agent"
    # The aarch64 guest fixture boots by UEFI too.
    "[ -e /usr/share/AAVMF/AAVMF_CODE.fd ]|qemu-efi-aarch64"
    # The cloud image fixture (tests/src/cloud_fixture.rs); the sbin tools may be outside a
    # non-root PATH.
    "command -v debootstrap || [ -x /usr/sbin/debootstrap ]|debootstrap"
    "command -v mkfs.ext4 || [ -x /usr/sbin/mkfs.ext4 ] || [ -x /sbin/mkfs.ext4 ]|e2fsprogs"
    "command -v sfdisk || [ -x /usr/sbin/sfdisk ] || [ -x /sbin/sfdisk ]|fdisk"
    "command -v grub-mkstandalone && [ -e /usr/lib/grub/x86_64-efi/linux.mod ]|grub-efi-amd64-bin"
    "command -v zstd|zstd"
    # The cloud image's boot test logs in over ssh with a key it generates.
    "command -v ssh && command -v ssh-keygen|openssh-client"
    # The Python binding and the Jumpstarter driver (scripts/test-python.sh): a virtualenv.
    "python3 -c 'import venv, ensurepip'|python3-venv"
)
# Installed without their recommendations: grub-efi-amd64-bin would bring the signed boot
# loaders (shim, grub-efi-amd64-signed), which only a machine that boots with them needs.
no_recommends=" grub-efi-amd64-bin "

# The aarch64 guest fixture downloads arm64 packages.
foreign_arch=arm64

missing() {
    local out=()
    for entry in "${checks[@]}"; do
        eval "${entry%|*}" >/dev/null 2>&1 || out+=("${entry##*|}")
    done
    echo "${out[*]:-}"
}

need=$(missing)
need_arch=""
dpkg --print-foreign-architectures | grep -qx "$foreign_arch" || need_arch=1
# The guest fixtures download their kernels, busybox-static and GRUB's arm64 modules with
# `apt-get download`, which needs apt's package lists.
need_update=""
apt-cache show linux-image-cloud-amd64 busybox-static "linux-image-arm64:$foreign_arch" \
    "busybox-static:$foreign_arch" "grub-efi-arm64-bin:$foreign_arch" >/dev/null 2>&1 ||
    need_update=1

if [ -z "$need" ] && [ -z "$need_update" ] && [ -z "$need_arch" ]; then
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then
        sudo="sudo"
    else
        echo "install-deps: need root to run:${need_arch:+ dpkg --add-architecture $foreign_arch &&} apt-get update${need:+ && apt-get install -y $need}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if [ -n "$need_arch" ]; then
    echo "install-deps: dpkg --add-architecture $foreign_arch" >&2
    $sudo dpkg --add-architecture "$foreign_arch"
fi
echo "install-deps: apt-get update" >&2
$sudo apt-get update -qq
# One package at a time, re-checking before each: a single resolver run over all of them has
# been seen to give up on the backports qemu-utils, and one install can change what the next
# check finds.
for entry in "${checks[@]}"; do
    if ! eval "${entry%|*}" >/dev/null 2>&1; then
        pkg=${entry##*|}
        opts=""
        case "$no_recommends" in *" $pkg "*) opts="--no-install-recommends" ;; esac
        echo "install-deps: apt-get install -y $opts $pkg" >&2
        $sudo apt-get install -y -qq $opts "$pkg" >/dev/null
    fi
done
still=$(missing)
if [ -n "$still" ]; then
    echo "install-deps: still missing after installing: $still" >&2
    exit 1
fi
