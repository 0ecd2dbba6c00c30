#!/usr/bin/env bash
# The Go module (go/, qemu-machine.invalid/qemumachine) against a real QEMU: installs
# libqemumachine into a private prefix (target/qm-prefix), builds the guest fixture, then checks
# gofmt, runs go vet, go test -race with the shared library, the calls that hand C Go memory
# again under GODEBUG=cgocheck=2, and go vet and a short go test with the static library
# (-tags qemumachine_static). scripts/test.sh runs it; it runs alone too:
#
#   scripts/go-test.sh [go test flags, e.g. -run TestConsole]
#
# The module uses the standard library only: the go command is kept off the network
# (GOPROXY=off).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-$PWD/target}
prefix="$target/qm-prefix"
scripts/install-lib.sh --debug "$prefix" >/dev/null
prefix=$(cd "$prefix" && pwd)

# The guest fixture's kernel, initrd and command line, for the console tests; and its initrd
# with the host's qemu-ga packed in, with the command line that starts the agent, for the guest
# agent tests (written into target/go-guest-agent).
fixture=$(cargo run -q -p qemu-machine-tests --bin build-fixture --locked -- x86_64 \
    --agent-initrd "$target/go-guest-agent")
QM_TEST_KERNEL=$(sed -n 's/^kernel: *//p' <<<"$fixture")
QM_TEST_INITRD=$(sed -n 's/^initrd: *//p' <<<"$fixture")
QM_TEST_APPEND=$(sed -n 's/^cmdline: *//p' <<<"$fixture")
QM_TEST_AGENT_INITRD=$(sed -n 's/^agent-initrd: *//p' <<<"$fixture")
QM_TEST_AGENT_APPEND=$(sed -n 's/^agent-cmdline: *//p' <<<"$fixture")
export QM_TEST_KERNEL QM_TEST_INITRD QM_TEST_APPEND QM_TEST_AGENT_INITRD QM_TEST_AGENT_APPEND

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
export LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export GOFLAGS="" GOPROXY=off GOWORK=off

cd go
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
    echo "go-test: not gofmt-formatted (run gofmt -w go/):" $unformatted >&2
    exit 1
fi
go vet ./...
go vet -tags qemumachine_static ./...
go test -race -count=1 -v "$@" ./...
# cgo's full pointer checks (every Go pointer passed to C, every write through one) on the calls
# that hand C Go memory: buffers, out-parameters, callbacks.
GODEBUG=cgocheck=2 go test -count=1 \
    -run 'Example|TestImages|TestImageFlash|TestPowerDrivesFlashDumpRelaunch|TestQtest|TestFDPassing|TestConsoleWithTheGuest|TestConsoleWriteDeadline|TestLaunchQMPEventsShutdown|TestErrorsAreTyped' ./...
# Linked statically: libqemumachine.so is not even on the loader's path.
LD_LIBRARY_PATH="" go test -tags qemumachine_static -count=1 \
    -run 'TestLinkage|TestVersionMatchesHeader|TestLaunchQMPEventsShutdown|^Example$' ./...
