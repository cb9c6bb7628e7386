#!/usr/bin/env bash
# The programs the tests run that do not come from PyPI, all from Debian:
# - promtool and amtool (prometheus, prometheus-alertmanager) validate the rendered Prometheus rules and Alertmanager
#   config, and prometheus itself scrapes the router in the Kubernetes canary test;
# - initdb and pg_ctl (postgresql) start the throwaway Postgres of the scaled-out store tests.
# Installed once, when missing, where apt-get can run as root; a no-op otherwise.
set -euo pipefail
missing=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
command -v pg_ctl >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "warning: ${missing[*]} not installed (needs apt-get as root); the tests that need them will fail" >&2
  exit 0
fi
echo "installing ${missing[*]} (Debian) for the tests that run them..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The packages' services are not started here (no init system); only the binaries are used.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
