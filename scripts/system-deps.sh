#!/usr/bin/env bash
# The programs the tests run that do not come from PyPI: promtool and amtool (Debian's prometheus and
# prometheus-alertmanager packages) validate the rendered Prometheus rules and Alertmanager config.
# Installed once, when missing, where apt-get can run as root; a no-op otherwise.
set -euo pipefail
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "warning: ${missing[*]} not installed (needs apt-get as root); the tests that validate rules with them will fail" >&2
  exit 0
fi
echo "installing ${missing[*]} (Debian) for the rule checks..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The packages' services are not started here (no init system); only the binaries are used.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
