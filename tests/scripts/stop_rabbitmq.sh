#!/usr/bin/env bash
# Stop the test RabbitMQ that start_rabbitmq.sh started (by the pid it kept), with its epmd
# left alone, and remove its state. Env: STATE_DIR (/tmp/celeriac-rabbitmq-test).
set -uo pipefail
D=${STATE_DIR:-/tmp/celeriac-rabbitmq-test}
pid=$(cat "$D/beam.pid" 2>/dev/null) || exit 0
kill "$pid" 2>/dev/null
for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
kill -9 "$pid" 2>/dev/null
rm -rf "$D"
# rabbitmq-server started epmd; stop it too unless another Erlang node still uses it.
pgrep -x beam.smp >/dev/null || epmd -kill >/dev/null 2>&1 || true
echo "rabbitmq stopped"
