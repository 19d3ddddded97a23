#!/bin/bash
# Base user data of the worker launch template, rendered by devstack
# (src/worker/userdata.rs). `devstack dispatch` always replaces it with a
# ticket's user data, so an instance that boots with this script was launched
# by hand or by mistake: it says so and terminates rather than idle.
set -euo pipefail

readonly REGION={{region}}
readonly WORKER_NAME={{worker_name}}
trap 'systemctl poweroff' ERR

echo "$WORKER_NAME: launched without a ticket (use devstack dispatch); terminating" >&2
imds_token=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token)
instance_id=$(curl -fsS -H "X-aws-ec2-metadata-token: $imds_token" http://169.254.169.254/latest/meta-data/instance-id)
aws ec2 terminate-instances --region "$REGION" --instance-ids "$instance_id" || systemctl poweroff
