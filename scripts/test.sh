#!/usr/bin/env bash
# The whole test suite: installs QEMU, Go and the guest fixtures' inputs when missing, builds the
# guest fixtures, then runs the Rust unit and integration tests against a real QEMU, the C program
# and the Go module that link libqemumachine, and the Python binding and Jumpstarter driver
# (scripts/test-python.sh).
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

# The Go module (go/) links libqemumachine through cgo and pkg-config, from a private prefix:
# gofmt, go vet, go test -race, and the static link.
echo "== go (go/: gofmt, go vet, go test -race against libqemumachine)"
scripts/go-test.sh

# The Python binding and the Jumpstarter driver, against the same library (target/pyenv).
echo "== python (scripts/test-python.sh)"
scripts/test-python.sh
