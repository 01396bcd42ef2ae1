#!/usr/bin/env bash
# Stop the private sshd started by start_sshd.sh (by its PidFile); its sessions end with it.
set -uo pipefail
D=${SSHD_DIR:-/var/lib/celeriac-sshd}
[ -s "$D/sshd.pid" ] || exit 0
p=$(cat "$D/sshd.pid")
if kill -0 "$p" 2>/dev/null; then
  kill -TERM "$p"; for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  echo "stopped sshd ($p)"
fi
rm -f "$D/sshd.pid"
