#!/usr/bin/env bash
# Posts FILE as the pull request's devstack plan comment, or updates the
# existing one. The comment is found by its first line, the hidden marker
# `<!-- devstack-plan -->` that `devstack show --format markdown` (and
# scripts/plan-failure-comment.sh) writes, AND by its author (the
# workflow's token, `github-actions[bot]` by default), so a reviewer who
# quotes the marker never has their comment overwritten.
# Usage: sticky-comment.sh PR_NUMBER FILE
# Needs GH_TOKEN and GITHUB_REPOSITORY; STICKY_COMMENT_AUTHOR overrides the author.
set -euo pipefail
pr="$1"
file="$2"
marker='<!-- devstack-plan -->'
author="${STICKY_COMMENT_AUTHOR:-github-actions[bot]}"
repo="${GITHUB_REPOSITORY:?set GITHUB_REPOSITORY=owner/name}"
[[ "$pr" =~ ^[0-9]+$ ]] || { echo "sticky-comment: PR number must be digits, got '$pr'" >&2; exit 1; }
[ -s "$file" ] || { echo "sticky-comment: $file is empty or missing" >&2; exit 1; }
existing=$(gh api --paginate "repos/$repo/issues/$pr/comments" \
  --jq ".[] | select(.user.login == \"$author\" and (.body | startswith(\"$marker\"))) | .id" | head -n 1)
if [ -n "$existing" ]; then
  gh api --method PATCH "repos/$repo/issues/comments/$existing" -F "body=@$file" >/dev/null
  echo "updated comment $existing"
else
  gh api --method POST "repos/$repo/issues/$pr/comments" -F "body=@$file" >/dev/null
  echo "posted a new plan comment"
fi
