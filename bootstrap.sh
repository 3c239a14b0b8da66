# Sourced by run_all.sh and run_tests.sh: make .venv, install REQUIREMENTS and this project
# (editable, so evsim/ is importable from anywhere) into it, again only when they changed.
# Usage: . ./bootstrap.sh requirements.txt
ev_sim_bootstrap() {
  local root reqs venv stamp digest python
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  reqs="$root/$1"
  venv="$root/.venv"
  stamp="$venv/.installed-$(basename "$1")"
  if [ ! -x "$venv/bin/python" ]; then
    python=${PYTHON:-python3}
    if ! command -v "$python" >/dev/null 2>&1; then
      echo "error: $python not found; install Python 3.11 or newer" >&2
      return 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      echo "error: Python 3.11 or newer is needed, $python is $("$python" -V 2>&1);" \
           "name another with PYTHON=python3.12" >&2
      return 1
    fi
    echo "Creating $venv ..." >&2
    "$python" -m venv "$venv" || { echo "error: could not create $venv" >&2; return 1; }
  fi
  digest=$(cat "$root"/requirements*.txt "$root/pyproject.toml" | cksum)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    echo "Installing $1 and evsim into $venv ..." >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs" \
      || { echo "error: pip could not install $1" >&2; return 1; }
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$root" \
      || { echo "error: pip could not install evsim from $root" >&2; return 1; }
    echo "$digest" > "$stamp"
  fi
  export PATH="$venv/bin:$PATH"
}
ev_sim_bootstrap "$@"
