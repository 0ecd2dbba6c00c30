#!/usr/bin/env bash
# Builds libqemumachine (shared and static) and installs it with its header and a pkg-config
# file, so that C and Go (cgo) programs can use `pkg-config --cflags --libs qemumachine`.
#
#   scripts/install-lib.sh [--debug] [PREFIX]      (PREFIX defaults to /usr/local)
#
# Then: cc prog.c $(pkg-config --cflags --libs qemumachine)
# (with PKG_CONFIG_PATH=PREFIX/lib/pkgconfig when PREFIX is not a system prefix).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
flags=(--release)
if [ "${1:-}" = "--debug" ]; then
    profile=debug
    flags=()
    shift
fi
prefix=${1:-/usr/local}
prefix=$(mkdir -p "$prefix" && cd "$prefix" && pwd)

cargo build -p qemu-ffi --locked "${flags[@]}"
target=${CARGO_TARGET_DIR:-target}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

install -d "$prefix/lib/pkgconfig" "$prefix/include"
install -m 0644 include/qemumachine.h "$prefix/include/qemumachine.h"
install -m 0644 "$target/$profile/libqemumachine.a" "$prefix/lib/libqemumachine.a"
install -m 0755 "$target/$profile/libqemumachine.so" "$prefix/lib/libqemumachine.so"
if [ "$profile" = release ]; then
    strip --strip-unneeded "$prefix/lib/libqemumachine.so"
fi

# Libraries a static link of libqemumachine.a needs besides libc (Rust's std).
cat > "$prefix/lib/pkgconfig/qemumachine.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: qemumachine
Description: Launch and control QEMU virtual machines (C ABI of qemu-machine)
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lqemumachine
Libs.private: -lpthread -ldl -lm -lgcc_s
PC
echo "installed libqemumachine $version into $prefix"
