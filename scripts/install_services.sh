#!/usr/bin/env bash
# Installs the real servers and checkers the integration tests use on loopback, where they are missing.
# - victoria-metrics speaks the InfluxDB v2 line-protocol write API (/api/v2/write); InfluxDB 2 itself is
#   not packaged for this distribution.
# - The Flux language server (@influxdata/flux-lsp-node: Flux's parser and type checker as WebAssembly)
#   checks the dashboard's and the monitor's Flux queries, which no local server can run.
set -euo pipefail
cd "$(dirname "$0")/.."
FLUX_LSP_VERSION=0.8.40
FLUX_LSP_DIR=.tools/flux-lsp

if ! command -v victoria-metrics >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing victoria-metrics (Debian package) for the InfluxDB sink tests"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq victoria-metrics >/dev/null
  else
    echo "victoria-metrics not found and cannot apt-get install it (not root): the InfluxDB sink tests will skip" >&2
  fi
fi

if [ ! -f "$FLUX_LSP_DIR/node_modules/@influxdata/flux-lsp-node/package.json" ]; then
  if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
    echo "installing the Flux language server ($FLUX_LSP_VERSION, npm) for the Flux query checks"
    mkdir -p "$FLUX_LSP_DIR"
    if ! npm install --silent --no-audit --no-fund --prefix "$FLUX_LSP_DIR" \
        "@influxdata/flux-lsp-node@$FLUX_LSP_VERSION" >/dev/null; then
      rm -rf "$FLUX_LSP_DIR"  # nothing half-installed for the tests to find
      echo "could not install the Flux language server from npm: the Flux query checks will skip" >&2
    fi
  else
    echo "node/npm not found: the Flux query checks will skip (install Node.js to run them)" >&2
  fi
fi
