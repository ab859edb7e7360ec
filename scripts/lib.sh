# Shared shell helpers for the scripts (sourced, not run).

# A fresh Debian python3 lacks venv/ensurepip: install it when we can (root), else say how.
ensure_venv_support() {
    if python3 -c 'import ensurepip, venv' 2>/dev/null; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; }
        return 0
    fi
    echo "python3 cannot create virtual environments: run 'sudo apt-get install python3-venv'" >&2
    exit 1
}

# pip install, quietly: its output is shown only when it fails (some machines' pip configuration
# makes pip warn about every missing find-links location).
pip_install() {
    local pip=$1 log
    shift
    log=$(mktemp)
    if ! "$pip" install --quiet --disable-pip-version-check "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}
