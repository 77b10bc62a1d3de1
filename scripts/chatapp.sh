#!/usr/bin/env bash
# Placeholder: filled in by the issue that owns it. Does nothing yet.
set -euo pipefail
echo "scripts/chatapp.sh: nothing to do yet ($*)"
