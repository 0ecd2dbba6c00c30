#!/usr/bin/env bash
# The main job: build the `qemu-machine` command and run the embedded default VM (x86_64,
# firmware only, no disk) for a few seconds, showing its firmware console, status and a clean
# shutdown. Installs QEMU first when it is missing and this user may run apt-get; otherwise
# prints the exact command to run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v qemu-system-x86_64 >/dev/null; then
    install="apt-get update && apt-get install -y qemu-system-x86"
    if [ "$(id -u)" -eq 0 ]; then
        echo "demo: installing QEMU: $install" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >/dev/null
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        echo "demo: installing QEMU: sudo sh -c '$install'" >&2
        sudo sh -c "DEBIAN_FRONTEND=noninteractive $install" >/dev/null
    else
        echo "demo: QEMU is not installed. Install it with:" >&2
        echo "    sudo sh -c '$install'" >&2
        exit 1
    fi
fi

exec cargo run --release --locked -q -p qemu-cli -- run --for "${1:-5s}"
