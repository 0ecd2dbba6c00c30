#!/usr/bin/env bash
# The whole test suite: installs QEMU, Go and the guest fixture's inputs when missing, builds the
# guest fixture, then runs the Rust unit and integration tests against a real QEMU, the C and Go
# programs that link libqemumachine, and the Python binding and Jumpstarter driver
# (scripts/test-python.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# Build the guest fixture once, before the tests that boot it run in parallel; a missing
# package is reported here, with the command that fixes it.
echo "== guest fixture"
cargo run -q -p qemu-machine-tests --bin build-fixture --locked

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

# The Python binding and the Jumpstarter driver, against the same library (target/pyenv).
echo "== python (scripts/test-python.sh)"
scripts/test-python.sh
