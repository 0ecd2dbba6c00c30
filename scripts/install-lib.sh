#!/usr/bin/env bash
# Builds libqemumachine (shared and static) and installs it for C, C++ and Go (cgo) programs:
#
#   PREFIX/include/qemumachine.h
#   LIBDIR/libqemumachine.so.X.Y.Z             the shared library, soname libqemumachine.so.0.Y
#   LIBDIR/libqemumachine.so.0.Y -> .so.X.Y.Z  the link the dynamic loader finds (the soname)
#   LIBDIR/libqemumachine.so -> .so.0.Y        the link `cc -lqemumachine` finds
#   LIBDIR/libqemumachine.a                    the static library
#   LIBDIR/pkgconfig/qemumachine.pc            pkg-config --cflags --libs [--static] qemumachine
#   LIBDIR/cmake/qemumachine/                  find_package(qemumachine): imported targets
#                                              qemumachine::qemumachine (shared) and
#                                              qemumachine::qemumachine_static
#
#   scripts/install-lib.sh [--debug] [--libdir DIR] [--destdir DIR] [PREFIX]
#
# PREFIX defaults to /usr/local; LIBDIR is PREFIX/lib unless --libdir names another directory
# relative to PREFIX (Debian's multiarch `lib/x86_64-linux-gnu`). --destdir DIR stages the
# files under DIR (DIR/PREFIX/...) while the pkg-config file still names PREFIX: packaging.
# --debug installs an unoptimised, unstripped build. The CMake package finds the other files
# relative to itself, so it still works after the tree is moved as a whole (the pkg-config
# file names PREFIX).
#
# Then: cc prog.c $(pkg-config --cflags --libs qemumachine)
# (with PKG_CONFIG_PATH=LIBDIR/pkgconfig when PREFIX is not a system prefix, and
# -Wl,-rpath,LIBDIR or LD_LIBRARY_PATH when LIBDIR is not one the dynamic loader searches).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    sed -n 's/^#   \(scripts.*\)/usage: \1/p' "$0" >&2
    exit 2
}

profile=release
flags=(--release)
libdir=lib
destdir=""
prefix=""
while [ $# -gt 0 ]; do
    case "$1" in
        --debug) profile=debug; flags=() ;;
        --libdir) [ $# -ge 2 ] || usage; libdir=${2#/}; shift ;;
        --destdir) [ $# -ge 2 ] || usage; destdir=$2; shift ;;
        -*) usage ;;
        *) [ -z "$prefix" ] || usage; prefix=$1 ;;
    esac
    shift
done
prefix=${prefix:-/usr/local}
if [ -n "$destdir" ]; then
    # The prefix as the installed files will see it; it must be absolute.
    case "$prefix" in /*) ;; *) echo "install-lib: with --destdir, PREFIX must be absolute" >&2; exit 2 ;; esac
    mkdir -p "$destdir"
    root="$(cd "$destdir" && pwd)$prefix"
else
    prefix=$(mkdir -p "$prefix" && cd "$prefix" && pwd)
    root=$prefix
fi

"${CARGO:-cargo}" build -p qemu-ffi --locked "${flags[@]}"
target=${CARGO_TARGET_DIR:-target}
built="$target/$profile"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# The soname the build gave the library (qemu-ffi/build.rs), e.g. libqemumachine.so.0.1.
soname=$(readelf -d "$built/libqemumachine.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]$/\1/p')
case "$soname" in
    libqemumachine.so.*) ;;
    *) echo "install-lib: $built/libqemumachine.so has no soname (readelf: '$soname')" >&2; exit 1 ;;
esac
real="libqemumachine.so.$version"

install -d "$root/include" "$root/$libdir/pkgconfig" "$root/$libdir/cmake/qemumachine"
install -m 0644 include/qemumachine.h "$root/include/qemumachine.h"
install -m 0644 "$built/libqemumachine.so" "$root/$libdir/$real"
install -m 0644 "$built/libqemumachine.a" "$root/$libdir/libqemumachine.a"
if [ "$profile" = release ]; then
    strip --strip-unneeded "$root/$libdir/$real"
    strip --strip-debug --enable-deterministic-archives "$root/$libdir/libqemumachine.a"
fi
ln -sfn "$real" "$root/$libdir/$soname"
ln -sfn "$soname" "$root/$libdir/libqemumachine.so"

# What a static link of libqemumachine.a needs besides libc: the libraries Rust's std uses
# (`rustc --print native-static-libs` says `-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc`).
# Not -lgcc_s: a fully static link (cc -static) has no libgcc_s and gets the unwinder from
# libgcc_eh, which cc adds itself, as it adds libgcc_s to a dynamic link.
static_libs="-lutil -lrt -lpthread -lm -ldl"

cat > "$root/$libdir/pkgconfig/qemumachine.pc" <<PC
prefix=$prefix
libdir=\${prefix}/$libdir
includedir=\${prefix}/include

Name: qemumachine
Description: Launch and control QEMU virtual machines (C ABI of qemu-machine)
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lqemumachine
Libs.private: $static_libs
PC

# From LIBDIR/cmake/qemumachine up to PREFIX.
up=".."
IFS=/ read -ra parts <<<"$libdir/cmake"
for part in "${parts[@]}"; do
    [ -n "$part" ] && up="$up/.."
done
cmake_libs=$(echo "$static_libs" | sed 's/-l//g; s/ /;/g')
major=${version%%.*}
minor=${version#*.}
minor=${minor%%.*}
bits=$(getconf LONG_BIT)
if [ "$major" = 0 ]; then
    same_abi="PACKAGE_FIND_VERSION_MAJOR STREQUAL \"0\" AND PACKAGE_FIND_VERSION_MINOR STREQUAL \"$minor\""
else
    same_abi="PACKAGE_FIND_VERSION_MAJOR STREQUAL \"$major\""
fi

cat > "$root/$libdir/cmake/qemumachine/qemumachineConfig.cmake" <<CMAKE
# The CMake package of libqemumachine $version, installed by scripts/install-lib.sh.
#
#   find_package(qemumachine $major.$minor REQUIRED)
#   target_link_libraries(app PRIVATE qemumachine::qemumachine)          # libqemumachine.so
#   target_link_libraries(app PRIVATE qemumachine::qemumachine_static)   # libqemumachine.a
#
# Paths are found relative to this file: the installed tree may be moved as a whole.

get_filename_component(_qm_prefix "\${CMAKE_CURRENT_LIST_DIR}/$up" ABSOLUTE)
set(_qm_libdir "\${_qm_prefix}/$libdir")

foreach(_qm_file "\${_qm_prefix}/include/qemumachine.h" "\${_qm_libdir}/$real"
                 "\${_qm_libdir}/libqemumachine.a")
  if(NOT EXISTS "\${_qm_file}")
    set(qemumachine_FOUND FALSE)
    set(qemumachine_NOT_FOUND_MESSAGE "\${_qm_file} is missing: reinstall libqemumachine")
    unset(_qm_file)
    return()
  endif()
endforeach()
unset(_qm_file)

if(NOT TARGET qemumachine::qemumachine)
  add_library(qemumachine::qemumachine SHARED IMPORTED)
  set_target_properties(qemumachine::qemumachine PROPERTIES
    IMPORTED_LOCATION "\${_qm_libdir}/$real"
    IMPORTED_SONAME "$soname"
    INTERFACE_INCLUDE_DIRECTORIES "\${_qm_prefix}/include")
endif()

if(NOT TARGET qemumachine::qemumachine_static)
  add_library(qemumachine::qemumachine_static STATIC IMPORTED)
  set_target_properties(qemumachine::qemumachine_static PROPERTIES
    IMPORTED_LOCATION "\${_qm_libdir}/libqemumachine.a"
    IMPORTED_LINK_INTERFACE_LANGUAGES "C"
    INTERFACE_INCLUDE_DIRECTORIES "\${_qm_prefix}/include"
    INTERFACE_LINK_LIBRARIES "$cmake_libs")
endif()

unset(_qm_prefix)
unset(_qm_libdir)
CMAKE

cat > "$root/$libdir/cmake/qemumachine/qemumachineConfigVersion.cmake" <<CMAKE
# Which requests libqemumachine $version satisfies. Like its soname ($soname), a version
# before 1.0 is compatible only within its minor version (0.1.x serves a request for 0.1 or
# 0.1.0, not 0.2), and from 1.0 on within its major version; never an older version than asked.
set(PACKAGE_VERSION "$version")
set(PACKAGE_VERSION_COMPATIBLE FALSE)
if(NOT PACKAGE_FIND_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
elseif(NOT PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION AND $same_abi)
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
endif()
if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
  set(PACKAGE_VERSION_EXACT TRUE)
endif()
# A 64-bit library: a 32-bit project cannot use it.
if(DEFINED CMAKE_SIZEOF_VOID_P AND NOT CMAKE_SIZEOF_VOID_P STREQUAL "$((bits / 8))")
  set(PACKAGE_VERSION "\${PACKAGE_VERSION} ($bits-bit)")
  set(PACKAGE_VERSION_UNSUITABLE TRUE)
endif()
CMAKE

# The dynamic loader's cache, for a system prefix it searches.
if [ -z "$destdir" ] && [ "$(id -u)" -eq 0 ] && { [ "$prefix" = /usr/local ] || [ "$prefix" = /usr ]; }; then
    ldconfig
fi
echo "installed libqemumachine $version ($soname) into ${destdir:+$destdir:}$prefix"
