#!/usr/bin/env bash
# Installs a released devstack binary (x86_64 Linux, static) into DEST_DIR
# after checking it against the release's SHA256SUMS: what the workflows
# run instead of compiling devstack on every dispatch.
# Usage: fetch-devstack.sh DEST_DIR [VERSION]   (VERSION: default the
# version in Cargo.toml, i.e. the release of the checked-out source)
# With GH_TOKEN and GITHUB_REPOSITORY set (in Actions) it downloads with
# `gh release download`, which also works for a private repository;
# otherwise over HTTPS from DEVSTACK_RELEASE_URL (default: the GitHub
# releases of Prog-Strength/devstack), laid out as <url>/v<version>/<file>.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:?usage: fetch-devstack.sh DEST_DIR [VERSION]}"
version="${2:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)}"
version="${version#v}"
artifact=devstack-x86_64-unknown-linux-musl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ -n "${GH_TOKEN:-}" ] && [ -n "${GITHUB_REPOSITORY:-}" ]; then
  gh release download "v$version" --repo "$GITHUB_REPOSITORY" --dir "$tmp" \
    --pattern SHA256SUMS --pattern "$artifact"
else
  base="${DEVSTACK_RELEASE_URL:-https://github.com/Prog-Strength/devstack/releases/download}/v$version"
  curl -fsSL --retry 3 --max-time 300 -o "$tmp/SHA256SUMS" "$base/SHA256SUMS"
  curl -fsSL --retry 3 --max-time 300 -o "$tmp/$artifact" "$base/$artifact"
fi

# Exactly this artifact's line: --ignore-missing would pass a file that
# has no line at all.
if ! line=$(grep -E "^[0-9a-fA-F]{64} [ *]$artifact\$" "$tmp/SHA256SUMS"); then
  echo "fetch-devstack: SHA256SUMS of v$version has no line for $artifact" >&2
  exit 1
fi
(cd "$tmp" && printf '%s\n' "$line" | sha256sum --check --strict -)
mkdir -p "$dest"
install -m 0755 "$tmp/$artifact" "$dest/devstack"
"$dest/devstack" --version
