#!/usr/bin/env bash
# System packages the test suite uses (idempotent; skipped when already present).
set -euo pipefail
need=()
command -v tshark >/dev/null 2>&1 || need+=(tshark)
[ -f /usr/share/ieee-data/oui.txt ] || need+=(ieee-data)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
