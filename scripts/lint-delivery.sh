#!/usr/bin/env bash
# CI checks its own delivery (called by scripts/test.sh, the README's test
# command, so `.ci/run` runs it):
#   - zizmor --offline on .github/ (zero findings at the default persona:
#     template injection, unpinned actions, persisted credentials,
#     excessive permissions, ...);
#   - check-jsonschema against its bundled GitHub workflow schema;
#   - shellcheck on every shell script under scripts/, worker/ and
#     manager-files/ (the rendered worker user data is shellchecked by the
#     Rust tests in src/worker/userdata/tests.rs: its template has
#     placeholders, so it is checked as rendered).
# zizmor and check-jsonschema come from PyPI when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

pip_install() {
  python3 -m pip install --quiet "$@" 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages "$@"
}
if ! command -v zizmor >/dev/null; then
  echo "installing zizmor (GitHub Actions static analysis) from PyPI"
  pip_install 'zizmor>=1.33,<2'
fi
if ! command -v check-jsonschema >/dev/null; then
  echo "installing check-jsonschema from PyPI"
  pip_install 'check-jsonschema>=0.39,<1'
fi

echo "lint: zizmor --offline .github/"
zizmor --offline --quiet .github/

echo "lint: check-jsonschema (GitHub workflow schema)"
check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

mapfile -t scripts < <(find scripts worker manager-files -type f -name '*.sh' | sort)
echo "lint: shellcheck ${#scripts[@]} scripts"
shellcheck "${scripts[@]}"
echo "lint: delivery clean"
