#!/usr/bin/env bash
# Builds bin/declaw, bin/envd and bin/declaw-init (the microVM guest init), static.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
mkdir -p bin
CGO_ENABLED=0 go build -trimpath -o bin/envd ./cmd/envd
CGO_ENABLED=0 go build -trimpath -o bin/declaw-init ./cmd/declaw-init
CGO_ENABLED=0 go build -trimpath -o bin/declaw ./cmd/declaw
