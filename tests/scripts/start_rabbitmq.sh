#!/usr/bin/env bash
# Start a private RabbitMQ broker for the tests on 127.0.0.1 (Debian's rabbitmq-server), with
# its own data, log and feature-flag files under STATE_DIR, and a consumer timeout of a day
# (the default 30 min would close the channel of a worker running a long task).
# Env: RMQ_PORT (5699), RMQ_DIST_PORT (25699), RMQ_NODE (celeriactest),
#      STATE_DIR (/tmp/celeriac-rabbitmq-test). Prints "rabbitmq up: <url> pid <pid>", or
# "already running" when a broker answers on the port (it is then left for its owner to stop).
set -euo pipefail
PORT=${RMQ_PORT:-5699}; DIST=${RMQ_DIST_PORT:-25699}; NODE=${RMQ_NODE:-celeriactest}
D=${STATE_DIR:-/tmp/celeriac-rabbitmq-test}
if ! command -v rabbitmq-server >/dev/null; then
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    rabbitmq-server >/dev/null
fi
if (echo > /dev/tcp/127.0.0.1/"$PORT") 2>/dev/null; then
  echo "already running: amqp://guest:guest@127.0.0.1:$PORT//"; exit 0
fi
mkdir -p "$D"; echo "[]." > "$D/enabled_plugins"
printf 'consumer_timeout = 86400000\nloopback_users.guest = true\n' > "$D/rabbitmq.conf"
# The server drops to the rabbitmq user: its directories must belong to it, or it dies with
# cannot_log_to_file / failed_to_create_feature_flags_file_directory.
chown -R rabbitmq:rabbitmq "$D"
export RABBITMQ_MNESIA_BASE=$D/mnesia RABBITMQ_LOG_BASE=$D/log RABBITMQ_NODENAME=$NODE@localhost \
  RABBITMQ_NODE_PORT=$PORT RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_DIST_PORT=$DIST \
  RABBITMQ_ENABLED_PLUGINS_FILE=$D/enabled_plugins RABBITMQ_FEATURE_FLAGS_FILE=$D/feature_flags \
  RABBITMQ_CONFIG_FILE=$D/rabbitmq.conf
(setsid rabbitmq-server > "$D/server.out" 2>&1 &)
for _ in $(seq 1 120); do (echo > /dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 1; done
pid=$(ss -ltnpH "sport = :$PORT" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)
[ -n "$pid" ] || { tail -20 "$D/server.out"; echo "rabbitmq did not start" >&2; exit 1; }
echo "$pid" > "$D/beam.pid"
echo "rabbitmq up: amqp://guest:guest@127.0.0.1:$PORT// pid $pid"
