#!/usr/bin/env bash
# Set up everything icefs needs on a fresh Debian machine, then run one job.
#
#   scripts/bootstrap.sh demo     set up, build a sample repository and mount it
#   scripts/bootstrap.sh test     set up, then lint, type-check and run the whole test suite
#   scripts/bootstrap.sh setup    set up only
#
# Idempotent: re-running it skips what is already in place.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ICEFS_VENV:-$here/.venv}"
job="${1:-setup}"
shift || true

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Install the Debian packages named that are not installed yet.
install_missing() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

install_debian_packages() {
    install_missing fuse3 libfuse3-dev pkg-config gcc rsync attr fio
}

# Print a Python interpreter >= 3.12 (icechunk 2.x and zarr 3.4 need it).
find_python() {
    local candidates=()
    [ -n "${ICEFS_PYTHON:-}" ] && candidates+=("$ICEFS_PYTHON")
    candidates+=(python3.14 python3.13 python3.12 python3)
    local pyenv_root
    pyenv_root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
    for d in "$pyenv_root"/versions/3.1[2-9]*; do
        [ -x "$d/bin/python3" ] && candidates+=("$d/bin/python3")
    done
    for py in "${candidates[@]}"; do
        if command -v "$py" >/dev/null 2>&1 \
            && "$py" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v "$py"
            return 0
        fi
    done
    return 1
}

make_venv() {
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import icefs, pyfuse3, pytest' 2>/dev/null \
        && [ "$venv/.stamp" -nt "$here/pyproject.toml" ]; then
        return 0
    fi
    local py
    if ! py="$(find_python)"; then
        say "no Python >= 3.12 found; install one (apt-get install python3.12, or pyenv) or set ICEFS_PYTHON"
        exit 1
    fi
    say "creating $venv with $py ($("$py" --version))"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    say "installing icefs and its dependencies (pyfuse3 builds from source)"
    "$venv/bin/python" -m pip install -q -e "$here[test]"
    touch "$venv/.stamp"
}

# Azurite (the Azure Blob emulator the tests start on 127.0.0.1) comes from the npm registry.
AZURITE_VERSION=3.35.0
install_test_servers() {
    # Prometheus scrapes a mount's metrics in the tests (fake-gcs-server comes from PyPI);
    # the cloud benchmark's smoke test mounts the peers icefs is compared with
    install_missing prometheus rclone s3fs
    if [ -x "$here/.tools/node_modules/.bin/azurite-blob" ]; then
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        say "installing Debian packages: nodejs npm"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nodejs npm >/dev/null
    fi
    say "installing azurite (npm) into .tools/ (not tracked by git)"
    mkdir -p "$here/.tools"
    npm install --prefix "$here/.tools" --no-audit --no-fund --silent --no-save \
        "azurite@$AZURITE_VERSION" >/dev/null
}

# The legacy programs the Zarr v2 view is tested with: netCDF-C and GDAL from Debian, and
# zarr-python 2 with an xarray that still reads it, in their own venv (the main one has zarr 3).
install_legacy_readers() {
    install_missing netcdf-bin gdal-bin
    local zarr2="$here/.tools/zarr2"
    if [ -x "$zarr2/bin/python" ] && "$zarr2/bin/python" -c 'import zarr, xarray' 2>/dev/null; then
        return 0
    fi
    say "installing zarr-python 2 into .tools/zarr2 (not tracked by git)"
    mkdir -p "$here/.tools"
    "$venv/bin/python" -m venv "$zarr2"
    "$zarr2/bin/python" -m pip install -q "zarr>=2.18,<3" "xarray>=2024.10,<2025.1"
}

install_debian_packages
make_venv
if [ "$job" = "test" ]; then
    install_test_servers
    install_legacy_readers
fi

export PATH="$venv/bin:$PATH"
case "$job" in
    setup)
        say "ready: $venv/bin/icefs"
        ;;
    demo)
        exec "$venv/bin/icefs" demo "$@"
        ;;
    test)
        cd "$here"
        say "ruff"
        ruff check icefs tests benchmarks harness
        ruff format --check icefs tests benchmarks harness
        say "mypy"
        mypy
        if [ "$#" -gt 0 ]; then
            say "pytest $*"
            exec pytest "$@"
        fi
        # tiers: the core (no kernel) first, stopping at its first failure; then FUSE
        say "pytest: core tier (no FUSE)"
        pytest -m "not fuse" -x
        say "pytest: FUSE tier (real mounts)"
        exec pytest -m fuse
        ;;
    *)
        say "unknown job '$job' (demo, test or setup)"
        exit 2
        ;;
esac
