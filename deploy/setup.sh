#!/usr/bin/env bash
# Installs everything camserve needs into .venv inside the repository (idempotent; re-runs pip only when a
# requirements or project file changed). Usage: deploy/setup.sh [--dev] [--java] [--browser]
#   --dev      also the test/lint tools (requirements-dev.txt)
#   --java     make sure Java 17 is there for TorchServe's frontend (installs it with apt-get under CI)
#   --browser  make sure headless Chromium is there for the gallery test (apt-get under CI)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

dev=0 java=0 browser=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --java) java=1 ;;
    --browser) browser=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

apt_install() {  # apt_install PACKAGE... : only where we may (root, CI or no terminal); else print the command
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && { [ "${CI:-}" = true ] || [ ! -t 0 ]; }; then
    echo "setup: installing $* with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    echo "setup: missing $*. Install it with:  sudo apt-get install -y $*" >&2
    return 1
  fi
}

py=${PYTHON:-python3.11}
command -v "$py" >/dev/null || py=python3
"$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "setup: camserve needs Python 3.11 (found: $("$py" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
  exit 1
}

[ -x .venv/bin/python ] || "$py" -m venv .venv
reqs=(requirements.txt)
[ "$dev" = 1 ] && reqs+=(requirements-dev.txt)
stamp=.venv/.camserve-installed-$( (cat "${reqs[@]}" VERSION pyproject.toml client/pyproject.toml proto/pyproject.toml; echo "${reqs[*]}") | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages into .venv (torch is large: a few minutes the first time)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  args=()
  for r in "${reqs[@]}"; do args+=(-r "$r"); done
  .venv/bin/python -m pip install -q "${args[@]}"
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e ./proto -e . -e ./client
  rm -f .venv/.camserve-installed-*
  touch "$stamp"
fi

if [ "$java" = 1 ]; then
  major=$(java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print v[1]}' || true)
  if [ -z "$major" ] || [ "$major" -lt 17 ]; then
    apt_install openjdk-17-jre-headless || {
      echo "setup: TorchServe's frontend needs Java 17 or newer (found: ${major:-none})." >&2; exit 1; }
  fi
fi

if [ "$browser" = 1 ] && ! command -v chromium >/dev/null; then
  apt_install chromium || echo "setup: without chromium the gallery screenshot test is skipped" >&2
fi
