#!/usr/bin/env bash
# The main job, end to end: build the `qemu-machine` command and the guest fixture (a Debian
# cloud kernel and a busybox initramfs, made from Debian packages), boot that Linux guest under
# TCG with this terminal on its serial console, run a command at its shell prompt, and power it
# off through ACPI (the power button; the guest's acpid powers off).
#
#   scripts/demo.sh [DURATION]
#
# The guest runs for DURATION (default 10s; booting takes a few seconds of it) and its shell is
# yours meanwhile; then the power button is pressed. Ctrl-] q presses it sooner, Ctrl-] ?
# lists the keys (Ctrl-C goes to the guest).
# With standard input that is not a terminal it runs unattended and exits 0 once the guest has
# powered off. Installs QEMU (and apt's package lists, which the fixture needs) when missing
# and this user may run apt-get; otherwise prints the command to run.
#
# For the test suite only: DEMO_BIN, DEMO_KERNEL, DEMO_INITRD and DEMO_CMDLINE name a built
# command and fixture, and the build is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}

# Runs an apt-get command as root: directly, through sudo, or not at all (says what to run).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo DEBIAN_FRONTEND=noninteractive "$@"
    else
        echo "demo: this needs root: sudo $*" >&2
        exit 1
    fi
}

if [ -z "${DEMO_BIN:-}" ]; then
    if ! command -v qemu-system-x86_64 >/dev/null; then
        echo "demo: installing QEMU: apt-get update && apt-get install -y qemu-system-x86" >&2
        as_root apt-get update -qq
        as_root apt-get install -y -qq qemu-system-x86 >/dev/null
    fi
    # The fixture downloads two packages with `apt-get download`, which needs apt's lists.
    if ! apt-cache show linux-image-cloud-amd64 busybox-static >/dev/null 2>&1; then
        echo "demo: fetching apt's package lists: apt-get update" >&2
        as_root apt-get update -qq
    fi
    echo "demo: building qemu-machine and the guest fixture" >&2
    # A debug build: it compiles in a fraction of a release build's time, and the guest's
    # speed is QEMU's, not this command's.
    cargo build --locked -q -p qemu-cli -p qemu-machine-tests --bin qemu-machine --bin build-fixture
    out=${CARGO_TARGET_DIR:-target}/debug
    fixture=$("$out/build-fixture" x86_64)
    DEMO_BIN=$out/qemu-machine
    DEMO_KERNEL=$(sed -n 's/^kernel: *//p' <<<"$fixture")
    DEMO_INITRD=$(sed -n 's/^initrd: *//p' <<<"$fixture")
    DEMO_CMDLINE=$(sed -n 's/^cmdline: *//p' <<<"$fixture")
fi

# What the guest runs once it is up (the fixture's qm.run), before its interactive shell
# (qm.after=shell): a shell that shows each command at the prompt before running it.
command='uname -a'
script="PS4='qm# ' sh -xc '$command'"
run=$(printf '%s' "$script" | base64 -w0)

echo "demo: booting Linux under TCG; it runs '$command', then its shell is yours until" \
    "$duration have passed and the ACPI power button powers it off" >&2
exec "$DEMO_BIN" run --accel tcg -m 256M \
    --kernel "$DEMO_KERNEL" --initrd "$DEMO_INITRD" \
    --append "$DEMO_CMDLINE qm.run=$run qm.after=shell" \
    --powerdown 30s --for "$duration"
