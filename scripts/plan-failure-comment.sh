#!/usr/bin/env bash
# Writes the PR comment for a plan that failed: the sticky marker (so it
# REPLACES the last plan comment: a stale plan never stays on the PR), the
# error lines devstack printed, and a link to the full log.
# Usage: plan-failure-comment.sh STDERR_FILE LOG_URL > comment.md
set -euo pipefail
errors="$1"
log_url="$2"
echo '<!-- devstack-plan -->'
echo '### devstack plan failed'
echo
echo "The plan could not be made, so nothing here says what a merge would change. [Full log]($log_url)."
echo
echo '```'
if [ -f "$errors" ] && [ -s "$errors" ]; then
  # The last lines hold the error (and its hint); colour codes stripped,
  # fences neutralised, kept well under GitHub's comment limit.
  sed -e 's/\x1b\[[0-9;]*m//g' -e 's/```/'"'''"'/g' "$errors" | tail -n 40 | cut -c1-400
else
  echo "(no devstack error output: an earlier step failed, see the log)"
fi
echo '```'
