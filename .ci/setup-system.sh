#!/usr/bin/env bash
# System packages the test suite uses (idempotent; only what is missing is installed):
#   tshark     ground truth and evidence-pcap checks
#   ieee-data  the MAC OUI database for asset vendors
#   chromium, fonts-noto-cjk  headless browser tests of the dashboards (zh/en labels)
#   tcpreplay, iproute2  live-capture tests on a veth pair in a private network namespace
set -euo pipefail
need=()
command -v tshark >/dev/null 2>&1 || need+=(tshark)
[ -f /usr/share/ieee-data/oui.txt ] || need+=(ieee-data)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -d /usr/share/fonts/opentype/noto ] || need+=(fonts-noto-cjk)  # Chinese labels in dashboard screenshots
command -v tcpreplay >/dev/null 2>&1 || need+=(tcpreplay)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
