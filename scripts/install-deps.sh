#!/usr/bin/env bash
# Installs what the test suite needs on a Debian 12 machine that has only the Rust toolchain:
# QEMU (x86_64 and arm) and qemu-img, OVMF, Go for the cgo test, valgrind, pkg-config, CMake
# and binutils for the C library's install tests, dpkg-dev for the Debian packages, FAT tools
# for checking the cloud-init seed, python3-venv for the Python tests, and apt's package lists
# for the guest fixture.
# Installs nothing that is already present. Needs root (or sudo) for apt-get.
set -euo pipefail

# "test-that-must-succeed|package" pairs, in install order.
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
    # the Python binding and the Jumpstarter driver (scripts/test-python.sh): a virtualenv
    "python3 -c 'import venv, ensurepip'|python3-venv"
)

missing() {
    local out=()
    for entry in "${checks[@]}"; do
        eval "${entry%%|*}" >/dev/null 2>&1 || out+=("${entry##*|}")
    done
    echo "${out[*]:-}"
}

need=$(missing)
# The guest fixture downloads the cloud kernel and busybox-static with `apt-get download`,
# which needs apt's package lists.
need_update=""
apt-cache show linux-image-cloud-amd64 busybox-static >/dev/null 2>&1 || need_update=1

if [ -z "$need" ] && [ -z "$need_update" ]; then
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then
        sudo="sudo"
    else
        echo "install-deps: need root to run: apt-get update${need:+ && apt-get install -y $need}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: apt-get update" >&2
$sudo apt-get update -qq
# One package at a time, re-checking before each: a single resolver run over all of them has
# been seen to give up on the backports qemu-utils, and one install can change what the next
# check finds.
for entry in "${checks[@]}"; do
    if ! eval "${entry%%|*}" >/dev/null 2>&1; then
        pkg=${entry##*|}
        echo "install-deps: apt-get install -y $pkg" >&2
        $sudo apt-get install -y -qq "$pkg" >/dev/null
    fi
done
still=$(missing)
if [ -n "$still" ]; then
    echo "install-deps: still missing after installing: $still" >&2
    exit 1
fi
