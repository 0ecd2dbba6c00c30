#!/usr/bin/env bash
# Builds the Python wheels of qemu-machine into OUTDIR (default target/wheels) and prints their
# paths:
#
#   qemu_machine-VERSION-py3-none-any.whl                     import qemu_machine
#   jumpstarter_driver_qemu_machine-VERSION-py3-none-any.whl  import jumpstarter_driver_qemu_machine
#
#   scripts/build-wheel.sh [OUTDIR]
#
# Then: pip install OUTDIR/qemu_machine-*.whl (and the driver's). The wheels are pure Python
# (ctypes, ABI mode): they carry no libqemumachine, which is found at run time as installed
# (scripts/install-lib.sh, or the libqemumachine0.1 Debian package), or where
# QEMU_MACHINE_LIB points. `pip wheel` builds them with setuptools, the interpreter's own when
# it has setuptools 61 or newer and wheel, else fetched from PyPI by pip's build isolation, from a copy of
# the sources so that the tree stays clean. PYTHON names the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -m pip --version >/dev/null 2>&1; then
    echo "build-wheel: $python has no pip: apt-get install -y python3-pip" >&2
    exit 1
fi
out=${1:-${CARGO_TARGET_DIR:-target}/wheels}
mkdir -p "$out"
out=$(cd "$out" && pwd)
isolation=()
if "$python" -c 'import setuptools, wheel, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 61)' 2>/dev/null; then
    isolation=(--no-build-isolation)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for project in qemu-machine jumpstarter-driver-qemu-machine; do
    cp -r "python/$project" "$work/$project"
    find "$work/$project" -name __pycache__ -prune -exec rm -rf {} +
    "$python" -m pip wheel --quiet --no-deps ${isolation[@]+"${isolation[@]}"} --wheel-dir "$work/out" "$work/$project" >&2
done
for wheel in "$work"/out/*.whl; do
    rm -f "$out/$(basename "$wheel")"
    mv "$wheel" "$out/"
    echo "$out/$(basename "$wheel")"
done
