#!/usr/bin/env bash
# The PowerShell grammar tests/ps1 parses deploy.ps1 with (no PowerShell runs on these machines):
# tree-sitter's Node bindings and tree-sitter-powershell, pinned by tests/ps1/package-lock.json.
# The bindings compile with node-gyp against the nodejs headers (g++, make: scripts/apt/ps1.txt).
set -euo pipefail
cd "$(dirname "$0")/../../tests/ps1"
if ! command -v npm >/dev/null; then
  echo "npm not found: tests/ps1 needs Node 20+ with npm (skipped locally, failed in CI)"
  exit 0
fi
# npm ci starts from scratch (and compiles): only when the lockfile is newer than the install.
if [ node_modules/.package-lock.json -nt package-lock.json ]; then
  echo "tests/ps1 node modules up to date"
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
echo "tests/ps1: $(node -p 'require("./node_modules/tree-sitter-powershell/package.json").version') grammar installed"
