#!/usr/bin/env bash
# The README's main command: install, build the model archives, start TorchServe, explain the bundled sample
# images through the camserve SDK and write the pictures to out/ (or --out DIR).
#
# The server is LEFT RUNNING afterwards, so the printed Python and curl calls work right away; stop it with
# `bash deploy/stop.sh`. Pass --stop to stop it when the demo is done instead (what CI does).
#   bash deploy/demo.sh [--out DIR] [--stop]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

out=out stop=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    --stop) stop=1; shift ;;
    *) echo "demo: unknown option $1 (use --out DIR, --stop)" >&2; exit 2 ;;
  esac
done

bash deploy/setup.sh --java
echo "== building model archives (model_store/archives/)"
.venv/bin/python -m model_store.archive build --all
# A server left from an earlier run serves old archives: replace it.
bash deploy/stop.sh >/dev/null
echo "== starting TorchServe (waits until every model's workers are ready)"
started=$(bash deploy/start.sh)   # its "how to call" text is printed by the demo below, with a real image
echo "${started%%$'\n'*}"         # first line: what is served, ready after how long
[ "$stop" = 1 ] && trap 'bash deploy/stop.sh' EXIT
echo "== explaining the sample images through the SDK"
.venv/bin/python -m deploy.demo --out "$out"
if [ "$stop" = 1 ]; then
  echo "== stopping the server (--stop)"
else
  echo "== the server keeps running; stop it with: bash deploy/stop.sh"
fi
