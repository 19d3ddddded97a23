#!/bin/bash
# Worker user data for one dispatch, rendered by devstack (src/worker/userdata.rs).
# Each placeholder is filled with a single-quoted shell word, or a whole file in a quoted
# heredoc. EC2 caps user data at 16 KB: keep this short; the worker's logic
# lives in `devstack worker run`.
set -euo pipefail

# Pinned versions: bump deliberately, one at a time.
readonly NODE_VERSION=22.14.0
readonly CLAUDE_CODE_VERSION=2.1.332
readonly GH_VERSION=2.63.2
readonly GIT_VERSION=2.47.1
readonly JQ_VERSION=1.7.1
readonly CWAGENT_VERSION=1.300051.0
readonly NODE_EXPORTER_VERSION=1.8.2
readonly PROMTAIL_VERSION=3.3.2

readonly ENV_NAME={{env_name}}
readonly TICKET_PATH={{ticket_path}}
readonly REGION={{region}}
readonly RUNS_TABLE={{runs_table}}
readonly DEVSTACK_URL={{devstack_url}}
readonly DEVSTACK_SHA256={{devstack_sha256}}
readonly USERDATA_LOG={{userdata_log}}
readonly AGENT_USER={{agent_user}}
INSTANCE_ID=

mkdir -p "$(dirname "$USERDATA_LOG")"
exec > >(tee -a "$USERDATA_LOG") 2>&1

terminate() {
  aws ec2 terminate-instances --region "$REGION" --instance-ids "$INSTANCE_ID" || systemctl poweroff
}

# A failure before the worker takes over: free the ticket, then go.
on_error() {
  echo "devstack bootstrap failed at line $1: releasing $TICKET_PATH, terminating" >&2
  if [[ -x /usr/local/bin/devstack ]]; then
    DEVSTACK_ENV="$ENV_NAME" /usr/local/bin/devstack fleet release --table "$RUNS_TABLE" \
      --sow "$TICKET_PATH" --instance-id "${INSTANCE_ID:-none}" --outcome error || true
  fi
  terminate
}
trap 'on_error $LINENO' ERR

fetch() { curl -fsSL --retry 5 --retry-connrefused "$1"; }
put() { mkdir -p "$(dirname "$1")" && cat >"$1"; }
as_agent() { runuser -u "$AGENT_USER" -- env HOME="/home/$AGENT_USER" PATH=/usr/local/bin:/usr/bin:/bin "$@"; }

imds_token=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token)
INSTANCE_ID=$(curl -fsS -H "X-aws-ec2-metadata-token: $imds_token" http://169.254.169.254/latest/meta-data/instance-id)
readonly INSTANCE_ID
echo "INSTANCE_ID=$INSTANCE_ID" | put /etc/devstack/instance.env

# The hard backstop: whatever happens below, the instance goes in 6 hours.
systemd-run --unit=devstack-backstop --on-active=6h \
  /usr/bin/aws ec2 terminate-instances --region "$REGION" --instance-ids "$INSTANCE_ID"

# devstack first, so that any later failure can release the ticket.
fetch "$DEVSTACK_URL" >/tmp/devstack
echo "$DEVSTACK_SHA256  /tmp/devstack" | sha256sum --check --strict -
install -m 0755 /tmp/devstack /usr/local/bin/devstack

put /etc/devstack/worker.toml <<'DEVSTACK_EOF'
{{worker_toml}}
DEVSTACK_EOF
put /etc/devstack/cloudwatch-agent.json <<'DEVSTACK_EOF'
{{cloudwatch_agent_json}}
DEVSTACK_EOF
put /etc/promtail/config.yaml <<'DEVSTACK_EOF'
{{promtail_yaml}}
DEVSTACK_EOF
put /etc/devstack/claude-plugins.txt <<'DEVSTACK_EOF'
{{claude_plugins}}
DEVSTACK_EOF
put /etc/systemd/system/node_exporter.service <<'DEVSTACK_EOF'
{{node_exporter_service}}
DEVSTACK_EOF
put /etc/systemd/system/promtail.service <<'DEVSTACK_EOF'
{{promtail_service}}
DEVSTACK_EOF
put /etc/systemd/system/devstack-worker.service <<'DEVSTACK_EOF'
{{devstack_worker_service}}
DEVSTACK_EOF

dnf install -y "git-${GIT_VERSION}" "amazon-cloudwatch-agent-${CWAGENT_VERSION}" tar xz unzip
/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl \
  -a fetch-config -m ec2 -s -c file:/etc/devstack/cloudwatch-agent.json

gh_release=https://github.com
fetch "$gh_release/prometheus/node_exporter/releases/download/v${NODE_EXPORTER_VERSION}/node_exporter-${NODE_EXPORTER_VERSION}.linux-amd64.tar.gz" |
  tar -xz --no-same-owner -C /usr/local/bin --strip-components=1 "node_exporter-${NODE_EXPORTER_VERSION}.linux-amd64/node_exporter"
fetch "$gh_release/grafana/loki/releases/download/v${PROMTAIL_VERSION}/promtail-linux-amd64.zip" >/tmp/promtail.zip
unzip -p /tmp/promtail.zip promtail-linux-amd64 >/usr/local/bin/promtail
chmod 0755 /usr/local/bin/promtail
systemctl daemon-reload
systemctl enable --now node_exporter.service promtail.service

fetch "$gh_release/jqlang/jq/releases/download/jq-${JQ_VERSION}/jq-linux-amd64" >/usr/local/bin/jq
chmod 0755 /usr/local/bin/jq
fetch "$gh_release/cli/cli/releases/download/v${GH_VERSION}/gh_${GH_VERSION}_linux_amd64.tar.gz" |
  tar -xz --no-same-owner -C /usr/local --strip-components=1 "gh_${GH_VERSION}_linux_amd64/bin/gh"
fetch "https://nodejs.org/dist/v${NODE_VERSION}/node-v${NODE_VERSION}-linux-x64.tar.xz" |
  tar -xJ --no-same-owner -C /usr/local --strip-components=1
corepack enable
npm install --global "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}"

# Claude refuses to run as root: the agent gets its own user.
id -u "$AGENT_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$AGENT_USER"
while read -r source plugin; do
  [[ -z "$source" || "$source" == \#* ]] && continue
  as_agent claude plugin marketplace add "$source"
  as_agent claude plugin install "$plugin"
done </etc/devstack/claude-plugins.txt

trap - ERR
echo "devstack bootstrap done: starting the worker for $TICKET_PATH"
systemctl start --no-block devstack-worker.service
