#!/usr/bin/env bash
# Checks that the publishable crates are ready to publish, and fails when one is not:
#
# 1. `cargo package` of qmp-proto, qemu-cmdline, qemu-process, qemu-ffi and qemu-cli in one
#    run. Cargo packages them in dependency order and verifies each by building it from its own
#    tarball, with the crates of this workspace it depends on taken from their tarballs too (a
#    temporary local registry under target/package), not from the path dependencies: what
#    `cargo publish` would upload, in the order it would upload them. Their other dependencies
#    come from crates.io. Nothing is uploaded.
# 2. Each tarball carries its README and both license files; qemu-ffi's the C header, the same
#    as include/qemumachine.h.
# 3. The crate docs build with warnings as errors (broken intra-doc links included).
#
# A new crate must be added to `crates` below, or have `publish = false` (tests/, bench/).
set -euo pipefail
cd "$(dirname "$0")/.."

crates=(qmp-proto qemu-cmdline qemu-process qemu-ffi qemu-cli)
packages=()
for crate in "${crates[@]}"; do
    packages+=(-p "$crate")
done
cargo=${CARGO:-cargo}
target=${CARGO_TARGET_DIR:-target}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

echo "check-crates: cargo package ${crates[*]}" >&2
# --allow-dirty: check the tree as it is, uncommitted changes included (cargo publish from a
# clean checkout is the real thing).
"$cargo" package --locked --allow-dirty "${packages[@]}"

for crate in "${crates[@]}"; do
    tarball="$target/package/$crate-$version.crate"
    listing=$(tar -tzf "$tarball")
    for file in README.md LICENSE-MIT LICENSE-APACHE Cargo.toml; do
        if ! grep -qx "$crate-$version/$file" <<<"$listing"; then
            echo "check-crates: $tarball lacks $file" >&2
            exit 1
        fi
    done
done
if ! tar -xzOf "$target/package/qemu-ffi-$version.crate" "qemu-ffi-$version/include/qemumachine.h" |
    cmp -s - include/qemumachine.h; then
    echo "check-crates: the qemu-ffi tarball's include/qemumachine.h is not include/qemumachine.h" >&2
    exit 1
fi

echo "check-crates: cargo doc (-D warnings) ${crates[*]}" >&2
RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" "$cargo" doc --no-deps --locked "${packages[@]}"
echo "check-crates: ${crates[*]} package, carry README and licenses, and document cleanly" >&2
