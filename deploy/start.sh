#!/usr/bin/env bash
# Starts camserve's TorchServe in the background from .run/ and returns once every model's workers are ready
# (it polls the management API and gRPC Ping; no sleeps). Prints the endpoints, where the keys are and how to
# call the server. Options go to deploy/serverctl.py start, e.g.
#   deploy/start.sh --models shapes-classifier --set grpc_inference_port=17070 --timeout 600
# Stop it with deploy/stop.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# TorchServe's frontend is Java 17+: check before anything else, with the exact fix.
major=$(java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print v[1]}' || true)
if [ -z "$major" ] || [ "$major" -lt 17 ]; then
  echo "start: TorchServe needs Java 17 or newer (found: ${major:-no java on PATH}). Install it with:" >&2
  echo "  sudo apt-get install -y openjdk-17-jre-headless" >&2
  exit 1
fi
[ -x .venv/bin/torchserve ] || { echo "start: .venv/bin/torchserve missing: run bash deploy/setup.sh" >&2; exit 1; }

exec .venv/bin/python -m deploy.serverctl start "$@"
