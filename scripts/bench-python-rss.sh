#!/usr/bin/env bash
# The side-by-side Jumpstarter figures of the README (not run by CI): the same workload through
# jumpstarter.common.utils.serve with upstream's driver (jumpstarter-driver-qemu 0.9.0 from PyPI)
# and with jumpstarter_driver_qemu_machine, one after the other on the Debian 12 cloud image
# fixture under TCG: flash the zstd image, power on, console login prompt and login, power off.
# Prints one JSON line per driver: the peak RSS of the Python process that runs the exporter
# and the client (VmHWM and ru_maxrss; QEMU and other children excluded), times, and how the
# guest stopped.
#
#   scripts/bench-python-rss.sh [IMAGE.zst]
#
# Two virtualenvs under target/: pyenv-bench-ours (python/requirements-test.txt and this
# repository's wheels) and pyenv-bench-upstream (jumpstarter-driver-qemu==0.9.0, its
# dependencies held to the same pins by python/requirements-test.txt as constraints). IMAGE
# defaults to the cloud image fixture (built by the tests crate's build-cloud-fixture, as root).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
target=${CARGO_TARGET_DIR:-$PWD/target}
pip=(-m pip install --quiet --disable-pip-version-check)

image=${1:-}
if [ -z "$image" ]; then
    image=$(cargo run -q -p qemu-machine-tests --bin build-cloud-fixture --locked | sed -n 's/^compressed: *//p')
fi
[ -f "$image" ] || { echo "bench-python-rss: no image at '$image'" >&2; exit 1; }

ours="$target/pyenv-bench-ours"
upstream="$target/pyenv-bench-upstream"
for venv in "$ours" "$upstream"; do
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
done
"$ours/bin/python" "${pip[@]}" -r python/requirements-test.txt
prefix="$target/qm-prefix-bench"
scripts/install-lib.sh "$prefix" >/dev/null   # release build, as users install it
mapfile -t wheels < <(PYTHON="$ours/bin/python" scripts/build-wheel.sh "$target/wheels")
"$ours/bin/python" "${pip[@]}" --no-deps --force-reinstall "${wheels[@]}"
"$upstream/bin/python" "${pip[@]}" -c python/requirements-test.txt jumpstarter-driver-qemu==0.9.0 pexpect

echo "machine: $(uname -srm), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "image: $image"
LD_LIBRARY_PATH="$prefix/lib" "$ours/bin/python" python/bench/jumpstarter_side_by_side.py ours "$image"
"$upstream/bin/python" python/bench/jumpstarter_side_by_side.py upstream "$image"
