#!/usr/bin/env bash
# The whole test suite: installs QEMU, Go and the guest fixture's inputs when missing, builds the
# guest fixture, then runs the Rust unit and integration tests against a real QEMU, and the C and Go
# programs that link libqemumachine.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== cargo test --workspace"
cargo test --workspace --locked
