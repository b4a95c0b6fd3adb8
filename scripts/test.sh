#!/usr/bin/env bash
# Runs every test of sluice, on a fresh Debian 12 machine as on a developer's one:
#   1. installs what the tests need (Debian packages listed in */apt-packages.txt, Python
#      packages in a virtual environment outside the clone);
#   2. checks formatting and lints (cargo fmt --check, cargo clippy -D warnings);
#   3. runs the Rust unit and integration tests (real Docker containers, a strict test Loki...);
#   4. runs the Python tests: the client helpers and the stack (promtool, amtool, compose,
#      Kubernetes manifests, and the end-to-end alert test with real Prometheus and Alertmanager).
# Build outputs go to $CARGO_TARGET_DIR (default ~/.cache/sluice-target) so that later runs
# reuse them. Every service a test starts is started by that test and stopped by it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
venv="${SLUICE_TEST_VENV:-$HOME/.cache/sluice-test-venv}"

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
mapfile -t packages < <(cat $(find . -name apt-packages.txt -not -path './target/*' -not -path './.git/*' | sort) | sed 's/#.*//' | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "ok: ${packages[*]}"

step "python packages (in $venv)"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
requirements=$(find . -name requirements-test.txt -not -path './.git/*' | sort)
"$venv/bin/python" -m pip install -q $(printf -- '-r %s ' $requirements) -e "clients/python[test]"

# Integration tests that drive real clients (the OpenTelemetry SDK) use this interpreter.
export SLUICE_TEST_PYTHON="$venv/bin/python"

step "format and lints"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings

step "rust tests"
cargo build --locked --bins
cargo test --locked --no-fail-fast

step "python tests"
export SLUICE_BIN="$CARGO_TARGET_DIR/debug/sluice"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/stack clients/python/tests

step "all tests passed"
