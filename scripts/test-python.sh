#!/usr/bin/env bash
# The Python tests: the qemu_machine binding (QEMUMachine against a real QEMU) and the Jumpstarter
# driver (upstream's offline tests adapted, and the real-guest scenario on the Debian cloud-image
# fixture). scripts/test.sh runs it after the Rust tests.
#
#   scripts/test-python.sh [PYTEST ARGS...]
#
# It makes a virtualenv in target/pyenv, installs python/requirements-test.txt (pinned) from
# PyPI, installs libqemumachine into target/qm-prefix (debug build), builds the two wheels
# (scripts/build-wheel.sh) and installs them, then runs pytest with the library found by its
# soname through LD_LIBRARY_PATH, as an installed library is. A missing prerequisite fails with
# the command that installs it.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null; then
    echo "test-python: $python not found: apt-get install -y python3 python3-venv python3-pip" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "test-python: the Jumpstarter driver needs Python 3.11 or newer ($python is $("$python" -V 2>&1)): apt-get install -y python3 python3-venv" >&2
    exit 1
fi
target=${CARGO_TARGET_DIR:-$PWD/target}
venv="$target/pyenv"
if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv"; then
        rm -rf "$venv"
        echo "test-python: could not make a virtualenv: apt-get install -y python3-venv" >&2
        exit 1
    fi
fi
echo "== python: pip install -r python/requirements-test.txt"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r python/requirements-test.txt

prefix="$target/qm-prefix"
scripts/install-lib.sh --debug "$prefix" >/dev/null

echo "== python: wheels"
mapfile -t wheels < <(PYTHON="$venv/bin/python" scripts/build-wheel.sh "$target/wheels")
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "${wheels[@]}"

echo "== python: pytest"
started=$(date +%s)
status=0
LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
PKG_CONFIG_PATH="$prefix/lib/pkgconfig" \
QM_TEST_PREFIX="$prefix" \
    "$venv/bin/python" -m pytest -p no:cacheprovider -ra "$@" \
    python/qemu-machine/tests python/jumpstarter-driver-qemu-machine/tests || status=$?
echo "python tests took $(( $(date +%s) - started )) s"
exit "$status"
