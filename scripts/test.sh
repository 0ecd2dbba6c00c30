#!/usr/bin/env bash
# The whole test suite: installs QEMU, Go and the guest fixtures' inputs when missing, builds the
# guest fixtures, then runs the Rust unit and integration tests against a real QEMU, and the C and Go
# programs that link libqemumachine.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# Build the guest fixtures once, before the tests that boot them run in parallel; a missing
# package or tool is reported here, with what fixes it. Each is reused while its definition is
# unchanged: the busybox ones (x86_64, aarch64) take seconds, the Debian cloud image about two
# minutes (debootstrap, as root).
echo "== guest fixtures (busybox: x86_64, aarch64)"
cargo run -q -p qemu-machine-tests --bin build-fixture --locked
echo "== cloud image fixture (Debian 12)"
cargo run -q -p qemu-machine-tests --bin build-cloud-fixture --locked

echo "== cargo test --workspace"
cargo test --workspace --locked

# Every publishable crate packages and verifies from its own tarball, and documents cleanly.
echo "== crates (cargo package, cargo doc -D warnings)"
scripts/check-crates.sh

# The Go program links libqemumachine through cgo and pkg-config, from a private prefix.
echo "== go test (tests/go, cgo against libqemumachine)"
target=${CARGO_TARGET_DIR:-$PWD/target}
prefix="$target/qm-prefix"
scripts/install-lib.sh --debug "$prefix" >/dev/null
(
    cd tests/go
    PKG_CONFIG_PATH="$prefix/lib/pkgconfig" LD_LIBRARY_PATH="$prefix/lib" \
        GOFLAGS=-mod=mod go test -count=1 -v ./...
)
