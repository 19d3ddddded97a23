#!/bin/bash
# Worker user data for one dispatch, rendered by devstack (src/worker/userdata.rs).
# Each placeholder is filled with a single-quoted shell word, or a whole file in a quoted
# heredoc. EC2 caps user data at 16 KB (gzipped, before base64): keep this short; the
# worker's logic lives in `devstack worker run`.
# -E: the ERR trap also fires for a failure inside a function.
set -Eeuo pipefail

# Pinned versions (and SHA-256 where noted): bump deliberately, one at a time.
readonly NODE_VERSION=20.18.1
readonly CLAUDE_CODE_VERSION=2.1.332
readonly GH_VERSION=2.63.2
readonly GIT_VERSION=2.47.1
readonly JQ_VERSION=1.7.1
readonly CWAGENT_VERSION=1.300051.0
readonly NODE_EXPORTER_VERSION=1.8.2
readonly PROMTAIL_VERSION=3.3.2
readonly GO_VERSION=1.22.5
readonly GO_SHA256=904b924d435eaea086515bc63235b192ea441bd8c9b198c507e85009e6e4c7f0
readonly GOLANGCI_LINT_VERSION=2.12.2
readonly GOLANGCI_LINT_SHA256=8df580d2670fed8fa984aac0507099af8df275e665215f5c7a2ae3943893a553
readonly UV_VERSION=0.6.13
readonly UV_SHA256=f6788fd45a25ea1033a671eaa9ece6c9b004ce5c9cf09552effadde567a7d7a5
readonly PRE_COMMIT_VERSION=3.8.0

readonly ENV_NAME={{env_name}}
readonly TICKET_PATH={{ticket_path}}
readonly DISPATCH_ID={{dispatch_id}}
readonly REGION={{region}}
readonly RUNS_TABLE={{runs_table}}
readonly PUSHGATEWAY_URL={{pushgateway_url}}
readonly DEVSTACK_URL={{devstack_url}}
readonly DEVSTACK_SHA256={{devstack_sha256}}
readonly USERDATA_LOG={{userdata_log}}
readonly AGENT_USER={{agent_user}}
readonly AGENT_PATH={{agent_path}}
readonly BOOT_EPOCH_FILE={{boot_epoch_file}}
readonly PLUGIN_GIT_BASE=https://github.com
readonly PLUGIN_ROOT=/opt/devstack/plugins
# After the final push, let the next 15 s scrape land; before terminating, let the
# log shippers flush (worker-contracts.md §5).
readonly FINAL_PUSH_PAUSE=2
readonly TERMINATE_PAUSE=10
# Boot, not this script's start: the run's started_at and durations count from it.
BOOT_EPOCH=$(($(date +%s) - $(cut -d. -f1 /proc/uptime)))
readonly BOOT_EPOCH
INSTANCE_ID=

mkdir -p "$(dirname "$USERDATA_LOG")" "$(dirname "$BOOT_EPOCH_FILE")"
exec > >(tee -a "$USERDATA_LOG") 2>&1
echo "$BOOT_EPOCH" >"$BOOT_EPOCH_FILE"

# ==== functions: begin (tests run this section alone, with their own settings above it)
phase_started=$(date +%s)
# Logs how long the phase that just ended took, and the time since boot.
phase() {
  local now
  now=$(date +%s)
  echo "boot: $1 took $((now - phase_started))s ($((now - BOOT_EPOCH))s since boot)"
  phase_started=$now
}

fetch() { curl -fsSL --retry 5 --retry-connrefused "$1"; }
put() { mkdir -p "$(dirname "$1")" && cat >"$1"; }
# fetch_sha256 URL SHA256 FILE: the download, refused unless it has that digest.
fetch_sha256() {
  fetch "$1" >"$3"
  echo "$2  $3" | sha256sum --check --strict --quiet -
}
# fetch_sums URL SUMS_URL FILE: the download, checked against the publisher's checksum
# file of the same pinned release (no digest of it could be verified when pinning).
fetch_sums() {
  local want
  fetch "$1" >"$3"
  want=$(fetch "$2" | awk -v f="${1##*/}" '$2 == f || $2 == "*" f { print $1 }')
  [[ ${#want} -eq 64 ]] || { echo "no checksum for ${1##*/} in $2" >&2; return 1; }
  echo "$want  $3" | sha256sum --check --strict --quiet -
}
as_agent() {
  if [[ "$(id -un)" == "$AGENT_USER" ]]; then
    "$@"
  else
    runuser -u "$AGENT_USER" -- env HOME="/home/$AGENT_USER" PATH="$AGENT_PATH" "$@"
  fi
}

# git_at URL COMMIT DIR: DIR holds URL at exactly COMMIT.
git_at() {
  rm -rf "$3" && mkdir -p "$3" &&
    git -C "$3" init -q &&
    git -C "$3" fetch -q --depth 1 "$1" "$2" &&
    git -C "$3" -c advice.detachedHead=false checkout -q FETCH_HEAD
}
# install_plugin NAME REPO COMMIT PLUGIN SOURCE (one line of claude-plugins.txt).
install_plugin() {
  local dir="$PLUGIN_ROOT/$1" manifest
  manifest="$dir/.claude-plugin/marketplace.json"
  git_at "$PLUGIN_GIT_BASE/$2.git" "$3" "$dir" || return 1
  if [[ "$5" != - ]]; then
    # The plugin's own repository, pinned: the marketplace points at the clone.
    git_at "$PLUGIN_GIT_BASE/${5%@*}.git" "${5##*@}" "$dir/pinned/$4" || return 1
    jq --arg p "$4" '(.plugins[] | select(.name == $p) | .source) = "./pinned/\($p)"' \
      "$manifest" >"$manifest.new" && mv "$manifest.new" "$manifest" || return 1
  fi
  as_agent claude plugin marketplace add "$dir" || return 1
  as_agent claude plugin install "$4@$1" || return 1
}
# install_plugins FILE: every plugin listed; one that fails is logged and skipped.
install_plugins() {
  local name repo commit plugin source
  while read -r name repo commit plugin source; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    if install_plugin "$name" "$repo" "$commit" "$plugin" "$source"; then
      echo "plugin $plugin@$name installed ($repo@$commit)"
    else
      echo "plugin $plugin@$name was NOT installed; the run goes on without it" >&2
    fi
  done <"$1"
}

# push_summary OUTCOME: the run summary `devstack worker run` would push (text format
# 0.0.4, ending in a newline), durations from boot.
push_summary() {
  local now labels
  now=$(date +%s)
  labels="sow=\"$TICKET_PATH\",outcome=\"$1\",started_at=\"$BOOT_EPOCH\""
  printf '# TYPE %s gauge\n%s{%s} %s\n' \
    developer_run_duration_seconds developer_run_duration_seconds "$labels" "$((now - BOOT_EPOCH))" \
    developer_run_prs_opened developer_run_prs_opened "$labels" 0 \
    developer_run_finished_at_seconds developer_run_finished_at_seconds "$labels" "$now" |
    curl -fsS --max-time 15 --retry 3 --retry-connrefused -X PUT --data-binary @- \
      -H 'Content-Type: text/plain; version=0.0.4; charset=utf-8' \
      "$PUSHGATEWAY_URL/metrics/job/developer_run/instance/${INSTANCE_ID:-$DISPATCH_ID}"
}

ddb() { aws dynamodb --region "$REGION" --output text "$@"; }
# release_lock OUTCOME: what the registry's release does (src/fleet/dynamo.rs), with the
# AWS CLI and the worker role's GetItem/UpdateItem only, for a worker that never got to
# run devstack. Only this dispatch's working lock; then its history row and its slot.
release_lock() {
  local now key did status started_at slot values
  now=$(date +%s)
  key="{\"sow\":{\"S\":\"$TICKET_PATH\"},\"sk\":{\"S\":\"LOCK\"}}"
  read -r did status started_at slot < <(ddb get-item --table-name "$RUNS_TABLE" \
    --consistent-read --key "$key" \
    --query 'Item.[dispatch_id.S, status.S, started_at.N, fleet_slot.S]') || return 1
  if [[ "$did" != "$DISPATCH_ID" || "$status" != working ]]; then
    echo "the lock on $TICKET_PATH is not this dispatch's to release (${did:-none}, ${status:-none})"
    return 0
  fi
  values="\":now\":{\"N\":\"$now\"},\":did\":{\"S\":\"$DISPATCH_ID\"}"
  ddb update-item --table-name "$RUNS_TABLE" --key "$key" \
    --update-expression 'SET #status = :status, updated_at = :now' \
    --condition-expression 'dispatch_id = :did AND #status = :working' \
    --expression-attribute-names '{"#status":"status"}' \
    --expression-attribute-values "{$values,\":status\":{\"S\":\"$1\"},\":working\":{\"S\":\"working\"}}" || return 1
  echo "lock on $TICKET_PATH released ($1)"
  ddb update-item --table-name "$RUNS_TABLE" \
    --key "{\"sow\":{\"S\":\"$TICKET_PATH\"},\"sk\":{\"S\":\"$(printf 'RUN#%020d#%s' "$started_at" "$DISPATCH_ID")\"}}" \
    --update-expression 'SET #status = :status, outcome = :status, finished_at = :now, duration_seconds = :dur, prs_opened = :zero, updated_at = :now' \
    --condition-expression 'attribute_exists(sk)' \
    --expression-attribute-names '{"#status":"status"}' \
    --expression-attribute-values "{\":now\":{\"N\":\"$now\"},\":status\":{\"S\":\"$1\"},\":dur\":{\"N\":\"$((now - started_at))\"},\":zero\":{\"N\":\"0\"}}" ||
    echo "no history row to finalize" >&2
  if [[ "$slot" == SLOT#* ]]; then
    ddb update-item --table-name "$RUNS_TABLE" \
      --key "{\"sow\":{\"S\":\"#fleet\"},\"sk\":{\"S\":\"$slot\"}}" \
      --update-expression 'SET released_at = :now' \
      --condition-expression 'holder = :sow AND dispatch_id = :did' \
      --expression-attribute-values "{$values,\":sow\":{\"S\":\"$TICKET_PATH\"}}" ||
      echo "fleet slot $slot was not this dispatch's any more" >&2
  fi
}

terminate() {
  aws ec2 terminate-instances --region "$REGION" --instance-ids "$INSTANCE_ID" || systemctl poweroff
}

# A failure before the worker takes over: report it, free the ticket and its slot, go.
on_error() {
  trap - ERR
  echo "devstack bootstrap failed at line $1: reporting, releasing $TICKET_PATH, terminating" >&2
  push_summary error || echo "cannot push the run summary" >&2
  sleep "$FINAL_PUSH_PAUSE"
  release_lock error || echo "cannot release the lock on $TICKET_PATH" >&2
  sleep "$TERMINATE_PAUSE"
}
# ==== functions: end
trap 'on_error $LINENO; terminate' ERR

imds_token=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token)
INSTANCE_ID=$(curl -fsS -H "X-aws-ec2-metadata-token: $imds_token" http://169.254.169.254/latest/meta-data/instance-id)
readonly INSTANCE_ID
echo "INSTANCE_ID=$INSTANCE_ID" | put /etc/devstack/instance.env

# The hard backstop: whatever happens below, the instance goes 6 hours after boot
# (the worker's own deadline, max_runtime_seconds from boot, comes first).
systemd-run --unit=devstack-backstop --on-boot=6h \
  /usr/bin/aws ec2 terminate-instances --region "$REGION" --instance-ids "$INSTANCE_ID"
phase instance-id

# devstack early: from here on `devstack worker run` can take over.
fetch "$DEVSTACK_URL" >/tmp/devstack
echo "$DEVSTACK_SHA256  /tmp/devstack" | sha256sum --check --strict -
install -m 0755 /tmp/devstack /usr/local/bin/devstack
phase devstack

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

# Amazon Linux's own repositories (locked to the AMI's release): git, the
# CloudWatch agent, the build tools and python3 with pip.
dnf install -y "git-${GIT_VERSION}" "amazon-cloudwatch-agent-${CWAGENT_VERSION}" \
  tar xz unzip gcc make python3 python3-pip
phase packages
/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl \
  -a fetch-config -m ec2 -s -c file:/etc/devstack/cloudwatch-agent.json

gh_release=https://github.com
ne="node_exporter-${NODE_EXPORTER_VERSION}.linux-amd64"
fetch_sums "$gh_release/prometheus/node_exporter/releases/download/v${NODE_EXPORTER_VERSION}/$ne.tar.gz" \
  "$gh_release/prometheus/node_exporter/releases/download/v${NODE_EXPORTER_VERSION}/sha256sums.txt" /tmp/ne.tgz
tar -xzf /tmp/ne.tgz --no-same-owner -C /usr/local/bin --strip-components=1 "$ne/node_exporter"
fetch_sums "$gh_release/grafana/loki/releases/download/v${PROMTAIL_VERSION}/promtail-linux-amd64.zip" \
  "$gh_release/grafana/loki/releases/download/v${PROMTAIL_VERSION}/SHA256SUMS" /tmp/promtail.zip
unzip -p /tmp/promtail.zip promtail-linux-amd64 >/usr/local/bin/promtail
chmod 0755 /usr/local/bin/promtail
systemctl daemon-reload
systemctl enable --now node_exporter.service promtail.service
phase observability

fetch_sums "$gh_release/jqlang/jq/releases/download/jq-${JQ_VERSION}/jq-linux-amd64" \
  "$gh_release/jqlang/jq/releases/download/jq-${JQ_VERSION}/sha256sum.txt" /tmp/jq-linux-amd64
install -m 0755 /tmp/jq-linux-amd64 /usr/local/bin/jq
gh="gh_${GH_VERSION}_linux_amd64"
fetch_sums "$gh_release/cli/cli/releases/download/v${GH_VERSION}/$gh.tar.gz" \
  "$gh_release/cli/cli/releases/download/v${GH_VERSION}/gh_${GH_VERSION}_checksums.txt" /tmp/gh.tgz
tar -xzf /tmp/gh.tgz --no-same-owner -C /usr/local --strip-components=1 "$gh/bin/gh"
fetch_sha256 "https://go.dev/dl/go${GO_VERSION}.linux-amd64.tar.gz" "$GO_SHA256" /tmp/go.tgz
rm -rf /usr/local/go && tar -xzf /tmp/go.tgz --no-same-owner -C /usr/local
gcl="golangci-lint-${GOLANGCI_LINT_VERSION}-linux-amd64"
fetch_sha256 "$gh_release/golangci/golangci-lint/releases/download/v${GOLANGCI_LINT_VERSION}/$gcl.tar.gz" \
  "$GOLANGCI_LINT_SHA256" /tmp/gcl.tgz
tar -xzf /tmp/gcl.tgz --no-same-owner -C /usr/local/bin --strip-components=1 "$gcl/golangci-lint"
fetch_sha256 "$gh_release/astral-sh/uv/releases/download/${UV_VERSION}/uv-x86_64-unknown-linux-gnu.tar.gz" \
  "$UV_SHA256" /tmp/uv.tgz
tar -xzf /tmp/uv.tgz --no-same-owner -C /usr/local/bin --strip-components=1
# pre-commit from PyPI at its pinned version, into its own environment.
UV_TOOL_DIR=/opt/uv-tools UV_TOOL_BIN_DIR=/usr/local/bin UV_PYTHON_DOWNLOADS=never \
  uv tool install --python python3 "pre-commit==${PRE_COMMIT_VERSION}"
phase toolchain

fetch_sums "https://nodejs.org/dist/v${NODE_VERSION}/node-v${NODE_VERSION}-linux-x64.tar.xz" \
  "https://nodejs.org/dist/v${NODE_VERSION}/SHASUMS256.txt" /tmp/node.txz
tar -xJf /tmp/node.txz --no-same-owner -C /usr/local --strip-components=1
corepack enable
npm install --global "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}"
phase node-and-claude

# Claude refuses to run as root: the agent gets its own user.
id -u "$AGENT_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$AGENT_USER"
install_plugins /etc/devstack/claude-plugins.txt
phase plugins

trap - ERR
echo "devstack bootstrap done ($ENV_NAME): starting the worker for $TICKET_PATH"
systemctl start --no-block devstack-worker.service
