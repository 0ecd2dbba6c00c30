#!/usr/bin/env bash
# The whole test suite: installs QEMU, Go and the guest fixture's inputs when missing, builds the
# guest fixture, then runs the Rust unit and integration tests against a real QEMU, the C program
# and the Go module that link libqemumachine.
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

# The Go module (go/) links libqemumachine through cgo and pkg-config, from a private prefix:
# gofmt, go vet, go test -race, and the static link.
echo "== go (go/: gofmt, go vet, go test -race against libqemumachine)"
scripts/go-test.sh
