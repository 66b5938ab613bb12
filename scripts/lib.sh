# Shared by scripts/serve, scripts/test and the benchmarks: create .venv and install the project
# when pyproject.toml has changed since the last install. Source it; it sets $VENV.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RACETRACK_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

ensure_venv() {
    local extras="${1:-}"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "racetrack: creating the virtualenv in $VENV" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.racetrack-installed${extras:+-$extras}"
    local want
    want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "racetrack: installing the project${extras:+ with [$extras]}" >&2
        # pip >= 22.3 for `pip --python`, which the python3 buildpack uses
        "$VENV/bin/python" -m pip install --quiet "pip>=22.3"
        "$VENV/bin/python" -m pip install --quiet -e "$ROOT${extras:+[$extras]}"
        echo "$want" > "$stamp"
    fi
}

# The reference runners the parity tests compare ours with: the `reference` extra of
# pyproject.toml, installed alone into their own virtualenv (not the project itself).
REFERENCE_VENV="${RACETRACK_REFERENCE_VENV:-$ROOT/.venv-reference}"
ensure_reference_venv() {
    local want stamp="$REFERENCE_VENV/.racetrack-installed"
    local -a packages
    mapfile -t packages < <("$VENV/bin/python" -c '
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["reference"]))
' "$ROOT/pyproject.toml")
    want="$(printf '%s\n' "${packages[@]}" | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    echo "racetrack: installing the reference runners (${packages[*]}) in $REFERENCE_VENV" >&2
    [ -x "$REFERENCE_VENV/bin/python" ] || "$PYTHON" -m venv "$REFERENCE_VENV"
    "$REFERENCE_VENV/bin/python" -m pip install --quiet "${packages[@]}"
    echo "$want" > "$stamp"
}

# Jobs run in a bubblewrap sandbox: install it where we may (root, or sudo without a password);
# elsewhere `racetrack serve` says what is missing.
ensure_sandbox() {
    if ! command -v bwrap >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then
        "$ROOT/scripts/setup-sandbox"
    fi
}
