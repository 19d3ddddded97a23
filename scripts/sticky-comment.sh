#!/usr/bin/env bash
# Posts FILE as the pull request's devstack plan comment, or updates the
# existing one: the comment is found by its first line, the hidden marker
# `<!-- devstack-plan -->` that `devstack plan --format markdown` writes.
# Usage: sticky-comment.sh PR_NUMBER FILE   (needs GH_TOKEN and GITHUB_REPOSITORY)
set -euo pipefail
pr="$1"
file="$2"
marker='<!-- devstack-plan -->'
repo="${GITHUB_REPOSITORY:?set GITHUB_REPOSITORY=owner/name}"
existing=$(gh api --paginate "repos/$repo/issues/$pr/comments" \
  --jq ".[] | select(.body | startswith(\"$marker\")) | .id" | head -n 1)
if [ -n "$existing" ]; then
  gh api --method PATCH "repos/$repo/issues/comments/$existing" -F "body=@$file" >/dev/null
  echo "updated comment $existing"
else
  gh api --method POST "repos/$repo/issues/$pr/comments" -F "body=@$file" >/dev/null
  echo "posted a new plan comment"
fi
