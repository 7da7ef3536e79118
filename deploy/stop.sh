#!/usr/bin/env bash
# Stops the server started by deploy/start.sh, like `torchserve --stop`: TERM to its process group (frontend and
# workers), wait, KILL after --timeout seconds (default 30); removes the pid file and the keys.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
exec .venv/bin/python -m deploy.serverctl stop "$@"
