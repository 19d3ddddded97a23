#!/bin/bash
# The manager's user data (rendered by devstack: stack/manager.rs fills the quoted
# settings below from the environment file). Boot-time setup only: the
# stack's configuration deploys with `devstack manager deploy`, never by
# replacing the instance (a changed user data is ignored as drift).
#
# 1. docker and the compose plugin (pinned, checksum-verified);
# 2. the data volume at /var/lib/manager (kept when it holds data) and one
#    directory per service, owned by its container's user;
# 3. the devstack arm64 binary (the run-history exporter), sha256-verified;
# 4. the stack settings (.env) and Grafana's admin credentials, read from
#    Secrets Manager (never written here);
# 5. `docker compose up -d` when the stack's files are on the volume (a
#    replaced manager picks up where the last one stopped; a new volume gets
#    them from `devstack manager deploy`).
set -euo pipefail
exec > >(tee -a /var/log/devstack-manager-setup.log) 2>&1

readonly DEVICE=/dev/sdf
readonly DATA=/var/lib/manager
readonly STACK_DIR=/var/lib/manager/stack
readonly ENV_NAME='__ENV_NAME__'
readonly REGION='__REGION__'
readonly RUNS_TABLE='__RUNS_TABLE__'
readonly PUBLIC_HOSTNAME='__PUBLIC_HOSTNAME__'
readonly GRAFANA_SECRET='__GRAFANA_SECRET__'
readonly DEVSTACK_URL='__DEVSTACK_URL__'
readonly DEVSTACK_SHA256='__DEVSTACK_SHA256__'
readonly COMPOSE_VERSION=v2.30.3
# sha256 of docker-compose-linux-aarch64 v2.30.3 (as pinned by the official
# docker image's Dockerfile, docker-library/docker).
readonly COMPOSE_SHA256=8fed7b79b8bd1cb0624142f7d723c3cc67ba747c77ed69abbdefdc77a6d416d1

step() { echo "devstack-manager: $*"; }

# --- 1. docker and the compose plugin --------------------------------------
step "installing docker and compose ${COMPOSE_VERSION}"
dnf install -y docker
systemctl enable --now docker
plugins=/usr/local/lib/docker/cli-plugins
mkdir -p "$plugins"
if ! docker compose version 2>/dev/null | grep -q "${COMPOSE_VERSION#v}"; then
  curl -fsSL --retry 5 -o /tmp/docker-compose \
    "https://github.com/docker/compose/releases/download/${COMPOSE_VERSION}/docker-compose-linux-aarch64"
  echo "${COMPOSE_SHA256}  /tmp/docker-compose" | sha256sum -c -
  install -m 0755 /tmp/docker-compose "$plugins/docker-compose"
  rm -f /tmp/docker-compose
fi

# --- 2. the data volume ----------------------------------------------------
# devstack attaches it as /dev/sdf once the instance runs (Amazon Linux links
# the NVMe device to /dev/sdf): wait for it. A blank volume gets a
# filesystem; one with data is kept.
step "mounting the data volume at $DATA"
for _ in $(seq 1 120); do
  [ -b "$DEVICE" ] && break
  sleep 5
done
if [ ! -b "$DEVICE" ]; then
  echo "the data volume never appeared at $DEVICE" >&2
  exit 1
fi
blkid "$DEVICE" >/dev/null || mkfs -t xfs "$DEVICE"
mkdir -p "$DATA"
uuid=$(blkid -s UUID -o value "$DEVICE")
grep -q "UUID=$uuid" /etc/fstab || echo "UUID=$uuid $DATA xfs defaults,nofail 0 2" >>/etc/fstab
mount -a

step "creating the data directories"
dirs() {
  local owner=$1
  shift
  for d in "$@"; do
    mkdir -p "$DATA/$d"
    chown "$owner" "$DATA/$d"
  done
}
dirs 65534:65534 prometheus pushgateway
dirs 472:0 grafana
dirs 10001:10001 loki
dirs 0:0 caddy/data caddy/config stack
chown -R 65534:65534 "$DATA/prometheus" "$DATA/pushgateway"
chown -R 472:0 "$DATA/grafana"
chown -R 10001:10001 "$DATA/loki"

# --- 3. the devstack binary --------------------------------------------------
if [ -n "$DEVSTACK_URL" ]; then
  step "installing devstack from $DEVSTACK_URL"
  curl -fsSL --retry 5 -o /tmp/devstack "$DEVSTACK_URL"
  echo "${DEVSTACK_SHA256}  /tmp/devstack" | sha256sum -c -
  install -m 0755 /tmp/devstack /usr/local/bin/devstack
  rm -f /tmp/devstack
else
  step "no published devstack release was rendered in: 'devstack manager deploy' installs the binary"
fi

# --- 4. settings and Grafana's credentials -----------------------------------
step "writing the stack settings"
umask 077
cat >"$STACK_DIR/.env" <<SETTINGS
DEVSTACK_ENV=$ENV_NAME
AWS_REGION=$REGION
RUNS_TABLE=$RUNS_TABLE
PUBLIC_HOSTNAME=$PUBLIC_HOSTNAME
SETTINGS
chmod 0644 "$STACK_DIR/.env"

# The secret holds {"user": "...", "password": "..."} (or just a password,
# for user admin). It goes to two files only Grafana's user can read.
step "reading Grafana's admin credentials from Secrets Manager ($GRAFANA_SECRET)"
mkdir -p "$STACK_DIR/secrets"
if secret=$(aws secretsmanager get-secret-value --region "$REGION" \
  --secret-id "$GRAFANA_SECRET" --query SecretString --output text); then
  printf '%s' "$secret" | python3 -c '
import json, sys
raw = sys.stdin.read()
try:
    v = json.loads(raw)
except ValueError:
    v = None
if not isinstance(v, dict):
    v = {"user": "admin", "password": raw}
d = sys.argv[1]
open(d + "/grafana-admin-user", "w").write(v.get("user") or "admin")
open(d + "/grafana-admin-password", "w").write(v["password"])
' "$STACK_DIR/secrets"
  unset secret
else
  # Never Grafana's default admin/admin: a random password nobody knows
  # until the secret exists and is applied (docs/manager.md).
  echo "cannot read secret $GRAFANA_SECRET: Grafana gets a random admin password; create the secret, then see docs/manager.md" >&2
  echo admin >"$STACK_DIR/secrets/grafana-admin-user"
  head -c 32 /dev/urandom | base64 | tr -d '\n' >"$STACK_DIR/secrets/grafana-admin-password"
fi
chown -R 472:0 "$STACK_DIR/secrets"
chmod 0500 "$STACK_DIR/secrets"
chmod 0400 "$STACK_DIR/secrets/grafana-admin-user" "$STACK_DIR/secrets/grafana-admin-password"
umask 022

# --- 5. the stack -----------------------------------------------------------
if [ -f "$STACK_DIR/docker-compose.yml" ] && [ -x /usr/local/bin/devstack ]; then
  step "starting the stack in $STACK_DIR"
  docker compose --project-directory "$STACK_DIR" -f "$STACK_DIR/docker-compose.yml" up -d
else
  step "the stack's files are not on the volume yet: run 'devstack manager deploy' to install and start them"
fi
step "done"
