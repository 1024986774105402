# Sourced by bin/emvsbayes and bin/test: find Python >= 3.12, make .venv, install emvsbayes into it.
# Re-installs only when pyproject.toml changed since the last install (a stamp holds its hash).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"

find_python() {
    local candidate
    # Inside the repo, .python-version makes pyenv's python3 resolve to 3.12.
    for candidate in "$(cd "$root" && command -v python3 2>/dev/null)" \
                     "$(cd "$root" && pyenv which python3.12 2>/dev/null)" \
                     "$(cd "$root" && pyenv which python3.13 2>/dev/null)" \
                     python3.13 python3.12 \
                     "$HOME/.pyenv/versions/3.12.1/bin/python3" "$HOME/.pyenv/versions/3.13.0/bin/python3"; do
        [ -n "$candidate" ] || continue
        if (cd "$root" && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))') >/dev/null 2>&1; then
            (cd "$root" && "$candidate" -c 'import sys; print(sys.executable)')
            return 0
        fi
    done
    return 1
}

stamp="$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.emvsbayes-stamp" 2>/dev/null)" != "$stamp" ]; then
    python="$(find_python)" || {
        echo "emvsbayes needs Python >= 3.12 (pymc 6 and arviz 1 do not run on older ones): install it, e.g. 'pyenv install 3.12', and run this again" >&2
        exit 2
    }
    echo "setting up $venv with $python (one-time, about a minute)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv" || exit 2
    log="$venv/pip-install.log"
    { "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
      "$venv/bin/python" -m pip install --disable-pip-version-check -e "$root[test]"; } > "$log" 2>&1 || {
        tail -n 20 "$log" >&2
        echo "emvsbayes: installing dependencies into $venv failed (pip's log: $log)" >&2
        exit 2
    }
    echo "$stamp" > "$venv/.emvsbayes-stamp"
fi
