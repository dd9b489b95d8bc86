#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a running server: installs
# the dependencies, builds and installs declaw + envd into /usr/local/bin,
# builds the base and python templates (once, ~1 min each), and runs
# `declaw server` in the foreground on the embedded default (SQLite under
# /var/lib/declaw, this node). Set DECLAW_API_KEY first to choose the key;
# otherwise one is generated into /var/lib/declaw/api-key.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
./scripts/build.sh
install -m 0755 bin/declaw bin/envd bin/declaw-init /usr/local/bin/
exec /usr/local/bin/declaw server --build-templates base,python "$@"
