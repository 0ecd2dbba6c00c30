#!/usr/bin/env bash
# Installs what the test suite needs on a Debian 12 machine that has only the Rust toolchain:
# QEMU (x86_64 and arm), Go for the cgo test, cpio-free fixture tools, valgrind and pkg-config.
# Installs nothing that is already present. Needs root (or sudo) for apt-get.
set -euo pipefail

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v go >/dev/null || need+=(golang-go)
command -v valgrind >/dev/null || need+=(valgrind)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v cc >/dev/null || need+=(gcc libc6-dev)
[ -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || [ -e /usr/share/OVMF/OVMF_CODE.fd ] || need+=(ovmf)
command -v gzip >/dev/null || need+=(gzip)
command -v xz >/dev/null || need+=(xz-utils)

# The guest fixture downloads the cloud kernel and busybox-static with `apt-get download`,
# which needs apt's package lists.
need_update=""
apt-cache show linux-image-cloud-amd64 busybox-static >/dev/null 2>&1 || need_update=1

if [ ${#need[@]} -eq 0 ] && [ -z "$need_update" ]; then
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then
        sudo="sudo"
    else
        echo "install-deps: need root to run: apt-get update${need[*]:+ && apt-get install -y ${need[*]}}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: apt-get update" >&2
$sudo apt-get update -qq
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "install-deps: apt-get install -y ${need[*]}" >&2
# One package at a time: the image may hold a newer qemu-utils from backports, and a single
# resolver run over all of them together has been seen to give up on that.
for pkg in "${need[@]}"; do
    $sudo apt-get install -y -qq "$pkg" >/dev/null
done
