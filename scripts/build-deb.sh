#!/usr/bin/env bash
# Builds the Debian packages of qemu-machine, with dpkg-deb from staged trees:
#
#   libqemumachine0.1     the shared library, libqemumachine.so.0.1.0 and its soname link
#                         (the package is named after the soname, as Debian's policy asks)
#   libqemumachine-dev    the header, the libqemumachine.so link, libqemumachine.a, the
#                         pkg-config file and the CMake package
#   qemu-machine          the command, its man pages and its bash, zsh and fish completions
#
#   scripts/build-deb.sh [--debug] [OUTDIR]        (OUTDIR defaults to target/debian)
#
# Then, as root: apt-get install ./OUTDIR/qemu-machine_*.deb (and the library's, as needed);
# apt fetches QEMU. --debug packages unoptimised builds (quicker to make, for tests); the
# default is the release build. Everything installed is stripped. Set DEBFULLNAME and
# DEBEMAIL to name the maintainer; SOURCE_DATE_EPOCH (default: the last commit's time) dates
# the changelog and the files, so the same tree gives the same packages.
#
# dpkg-deb rather than debhelper or cargo-deb: it is part of dpkg (always there), the layout is
# all in this script, and nothing has to be installed from crates.io first. dpkg-shlibdeps
# (dpkg-dev) computes the library dependencies, as debhelper would.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
flags=(--release)
lib_flags=()
compress=(-Zxz)
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        # Test packages: quick to build and to compress.
        --debug) profile=debug; flags=(); lib_flags=(--debug); compress=(-Zgzip -z1) ;;
        -*) echo "usage: scripts/build-deb.sh [--debug] [OUTDIR]" >&2; exit 2 ;;
        *) out=$1 ;;
    esac
    shift
done
for tool in dpkg-deb dpkg-shlibdeps strip readelf; do
    if ! command -v "$tool" >/dev/null; then
        echo "build-deb: $tool is missing: apt-get install -y dpkg-dev binutils" >&2
        exit 1
    fi
done

cargo=${CARGO:-cargo}
target=${CARGO_TARGET_DIR:-target}
target=$(mkdir -p "$target" && cd "$target" && pwd)
out=${out:-$target/debian}
mkdir -p "$out"
out=$(cd "$out" && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
debversion="$version-1"
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
maintainer="${DEBFULLNAME:-the qemu-machine developers} <${DEBEMAIL:-qemu-machine@invalid}>"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

work="$target/debian-build.$$"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

# The library, staged by the same script that installs it elsewhere; then the command.
scripts/install-lib.sh ${lib_flags[@]+"${lib_flags[@]}"} --libdir "lib/$multiarch" --destdir "$work/lib" /usr >&2
"$cargo" build -p qemu-cli --locked ${flags[@]+"${flags[@]}"}
soname=$(readelf -d "$work/lib/usr/lib/$multiarch/libqemumachine.so.$version" |
    sed -n 's/.*(SONAME).*\[\(.*\)\]$/\1/p')
abi=${soname#libqemumachine.so.}
libpkg="libqemumachine$abi"

# Package roots, where debhelper would have them (dpkg-shlibdeps looks for them there).
runtime="$work/debian/$libpkg"
dev="$work/debian/libqemumachine-dev"
cli="$work/debian/qemu-machine"
lib="usr/lib/$multiarch"
install -d "$runtime/$lib" "$dev/$lib" "$dev/usr/include" "$cli/usr/bin" \
    "$runtime/DEBIAN" "$dev/DEBIAN" "$cli/DEBIAN"
mv "$work/lib/$lib/libqemumachine.so.$version" "$work/lib/$lib/$soname" "$runtime/$lib/"
mv "$work/lib/$lib/libqemumachine.so" "$work/lib/$lib/libqemumachine.a" "$work/lib/$lib/pkgconfig" \
    "$work/lib/$lib/cmake" "$dev/$lib/"
mv "$work/lib/usr/include/qemumachine.h" "$dev/usr/include/"
install -m 0755 "$target/$profile/qemu-machine" "$cli/usr/bin/qemu-machine"
# Stripped as dh_strip would (a --debug build too: the packages stay small).
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$runtime/$lib/libqemumachine.so.$version" "$cli/usr/bin/qemu-machine"
strip --strip-debug --remove-section=.comment --remove-section=.note \
    --enable-deterministic-archives "$dev/$lib/libqemumachine.a"
chmod 0644 "$runtime/$lib/libqemumachine.so.$version"

# Man pages and completions, generated from the clap definition (see qemu-cli/src/dist.rs).
install -d "$cli/usr/share/man/man1" "$cli/usr/share/bash-completion/completions" \
    "$cli/usr/share/zsh/vendor-completions" "$cli/usr/share/fish/vendor_completions.d"
for page in qemu-cli/dist/man/*.1; do
    gzip -9nc "$page" > "$cli/usr/share/man/man1/$(basename "$page").gz"
done
install -m 0644 qemu-cli/dist/completions/qemu-machine.bash \
    "$cli/usr/share/bash-completion/completions/qemu-machine"
install -m 0644 qemu-cli/dist/completions/_qemu-machine "$cli/usr/share/zsh/vendor-completions/"
install -m 0644 qemu-cli/dist/completions/qemu-machine.fish \
    "$cli/usr/share/fish/vendor_completions.d/"

# Each package's copyright and changelog.
date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
for root in "$runtime" "$dev" "$cli"; do
    pkg=$(basename "$root")
    doc="$root/usr/share/doc/$pkg"
    install -d "$doc"
    {
        echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
        echo "Upstream-Name: qemu-machine"
        echo
        echo "Files: *"
        echo "Copyright: 2026 the qemu-machine developers"
        echo "License: MIT or Apache-2.0"
        echo
        echo "License: MIT"
        sed 's/^$/./; s/^/ /' LICENSE-MIT
        echo
        echo "License: Apache-2.0"
        echo " On Debian systems, the full text of the Apache License, Version 2.0 can be found"
        echo " in /usr/share/common-licenses/Apache-2.0."
    } > "$doc/copyright"
    printf '%s\n' \
        "qemu-machine ($debversion) unstable; urgency=medium" "" \
        "  * Built from the qemu-machine repository by scripts/build-deb.sh." "" \
        " -- $maintainer  $date" | gzip -9n > "$doc/changelog.Debian.gz"
done

# Library dependencies, as dpkg-shlibdeps finds them (it reads a debian/control).
printf 'Source: qemu-machine\n\nPackage: %s\nArchitecture: any\n\nPackage: qemu-machine\nArchitecture: any\n' \
    "$libpkg" > "$work/debian/control"
shlibdeps() {
    (cd "$work" && dpkg-shlibdeps -O "$@") | sed -n 's/^shlibs:Depends=//p'
}
lib_depends=$(shlibdeps "debian/$libpkg/$lib/libqemumachine.so.$version")
cli_depends=$(shlibdeps debian/qemu-machine/usr/bin/qemu-machine)

description_tail=" qemu-machine launches QEMU virtual machines and controls them over QMP:
 one deadline for start-up, events kept in order, the serial console drained,
 port forwards and disks set up from a JSON description, and QEMU killed with
 its temp dir removed when the program that launched it dies."

control() {
    local root=$1
    shift
    {
        printf '%s\n' "$@"
        echo "Installed-Size: $(du -sk --apparent-size "$root/usr" | cut -f1)"
    } > "$root/DEBIAN/control"
    (cd "$root" && find usr -type f -print0 | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
    find "$root" -type d -exec chmod 0755 {} +
    find "$root/usr" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
}

control "$runtime" \
    "Package: $libpkg" "Source: qemu-machine" "Version: $debversion" "Architecture: $arch" \
    "Maintainer: $maintainer" "Section: libs" "Priority: optional" "Multi-Arch: same" \
    "Depends: $lib_depends" "Recommends: qemu-system-x86 | qemu-system" "Suggests: qemu-utils" \
    "Description: launch and control QEMU virtual machines (C library)" \
    "$description_tail" " ." " This package contains the shared library, libqemumachine."
echo "libqemumachine $abi $libpkg (>= $version)" > "$runtime/DEBIAN/shlibs"
echo "activate-noawait ldconfig" > "$runtime/DEBIAN/triggers"
chmod 0644 "$runtime/DEBIAN/shlibs" "$runtime/DEBIAN/triggers"

control "$dev" \
    "Package: libqemumachine-dev" "Source: qemu-machine" "Version: $debversion" \
    "Architecture: $arch" "Maintainer: $maintainer" "Section: libdevel" "Priority: optional" \
    "Multi-Arch: same" "Depends: $libpkg (= $debversion)" \
    "Description: launch and control QEMU virtual machines (C development files)" \
    "$description_tail" " ." \
    " This package contains the header qemumachine.h, the static library, and the" \
    " pkg-config file and CMake package (find_package(qemumachine))."

control "$cli" \
    "Package: qemu-machine" "Source: qemu-machine" "Version: $debversion" "Architecture: $arch" \
    "Maintainer: $maintainer" "Section: otherosfs" "Priority: optional" \
    "Depends: $cli_depends, qemu-system-x86 | qemu-system" "Recommends: qemu-utils" \
    "Suggests: ovmf, xz-utils, zstd" \
    "Description: run QEMU virtual machines, talk QMP to them, manage disk images" \
    "$description_tail" " ." \
    " This package contains the qemu-machine command: VMs from a JSON description" \
    " or flags with the terminal on the serial console, a QMP shell, and disk image" \
    " tools."

for root in "$runtime" "$dev" "$cli"; do
    pkg=$(basename "$root")
    dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$out/${pkg}_${debversion}_${arch}.deb" >&2
done
echo "$out/${libpkg}_${debversion}_${arch}.deb"
echo "$out/libqemumachine-dev_${debversion}_${arch}.deb"
echo "$out/qemu-machine_${debversion}_${arch}.deb"
