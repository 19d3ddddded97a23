#!/usr/bin/env bash
# The main job, end to end, against a local AWS API that this script starts
# itself (moto's server on a free loopback port): init, plan, apply, a
# no-op plan, state list, outputs, dispatch of a worker and the fleet list.
# Nothing here touches real AWS: every request goes to the local endpoint.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

if ! python3 -c 'import moto.server' 2>/dev/null; then
  say "installing moto (the local AWS API)"
  python3 -m pip install --quiet 'moto[server]'
fi

say "building devstack"
cargo build --quiet
devstack="${CARGO_TARGET_DIR:-$PWD/target}/debug/devstack"

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
MOTO_IAM_LOAD_MANAGED_POLICIES=true python3 -m moto.server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then break; fi
  sleep 0.2
done

export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo
export AWS_REGION=us-east-2 AWS_DEFAULT_REGION=us-east-2
export AWS_EC2_METADATA_DISABLED=true
echo "local AWS endpoint: $AWS_ENDPOINT_URL (moto, pid $moto_pid)"

# What operators create by hand once in a real account: the two secrets
# (devstack only checks they exist and uses their ARNs) and, in a fresh
# local endpoint, the public AMI parameters AWS publishes.
python3 scripts/seed-local-aws.py

cd "$work"
say "devstack init"
"$devstack" init
say "devstack plan"
"$devstack" plan
say "devstack apply --auto-approve"
"$devstack" apply --auto-approve
say "devstack plan --detailed-exitcode (a no-op: exit 0)"
"$devstack" plan --detailed-exitcode
say "devstack state list"
"$devstack" state list
say "devstack output"
"$devstack" output
if "$devstack" dispatch --help >/dev/null 2>&1 && "$devstack" output launch_template_id >/dev/null 2>&1; then
  say "devstack dispatch sows/demo.md"
  # A development build has no published release for workers to download,
  # so the demo names the worker binary explicitly: a clearly fake URL and
  # digest. The demo never boots a worker (moto only records the launch);
  # tests/release_delivery.rs downloads and verifies a real one.
  "$devstack" dispatch sows/demo.md --dispatched-by demo \
    --worker-binary https://example.invalid/devstack-x86_64-unknown-linux-musl \
    --worker-sha256 deadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeef
  say "devstack fleet list"
  "$devstack" fleet list
fi
say "done: the platform stack is applied on the local endpoint"
