#!/usr/bin/env bash
# The whole test suite. Installs what the tests need on a fresh machine
# (moto's server from PyPI; shellcheck and the Prometheus Pushgateway from
# Debian), then runs every unit, integration and snapshot test. Each
# integration test starts its own local AWS endpoint (moto) on a free
# loopback port; nothing reaches real AWS.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import moto.server' 2>/dev/null; then
  echo "installing moto[server] (the local AWS API the tests run against)"
  python3 -m pip install --quiet 'moto[server]'
fi

# The AWS CLI (the one Amazon Linux ships, on the workers): the user data's
# bootstrap-failure release runs it, and tests/worker_e2e.rs runs that
# section against moto.
if ! command -v aws >/dev/null; then
  echo "installing awscli (the worker user data's release path is tested with it)"
  python3 -m pip install --quiet awscli
fi

missing=()
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v git >/dev/null || missing+=(git)
command -v prometheus-pushgateway >/dev/null || [ -x /usr/bin/prometheus-pushgateway ] || missing+=(prometheus-pushgateway)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing from Debian: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the gateway as a service on :9091; the tests start their
  # own on free ports, so the packaged one is not needed.
  $sudo systemctl disable --now prometheus-pushgateway >/dev/null 2>&1 || true
fi

export AWS_EC2_METADATA_DISABLED=true
cargo test --locked "$@"
