#!/usr/bin/env bash
# Installs the real servers the integration tests start on loopback, where they are missing.
# victoria-metrics speaks the InfluxDB v2 line-protocol write API (/api/v2/write); InfluxDB 2 itself is
# not packaged for this distribution.
set -euo pipefail
if command -v victoria-metrics >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing victoria-metrics (Debian package) for the InfluxDB sink tests"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq victoria-metrics >/dev/null
else
  echo "victoria-metrics not found and cannot apt-get install it (not root): the InfluxDB sink tests will skip" >&2
fi
