#!/usr/bin/env bash
# Idempotent private sshd on 127.0.0.1:${SSHD_PORT:-2222}, key-only, for root and a test user,
# for the SSH channel tests. Installs openssh-server if missing (needs root and apt).
# Everything lives in $SSHD_DIR (default /var/lib/celeriac-sshd); the system sshd is untouched.
# Outputs: $SSHD_DIR/client_key (private key for root and $SSHD_USER), $SSHD_DIR/known_hosts,
# $SSHD_DIR/sshd.log. Prints "already running" when an sshd from $SSHD_DIR was up before.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
D=${SSHD_DIR:-/var/lib/celeriac-sshd}
PORT=${SSHD_PORT:-2222}
U=${SSHD_USER:-celeriac}
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then
  apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends openssh-server \
      >/dev/null 2>&1 \
    || { apt-get update -qq; apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
           --no-install-recommends openssh-server >/dev/null; }
fi
id "$U" >/dev/null 2>&1 || useradd -m -s /bin/bash "$U"
# useradd leaves '!' (locked) in /etc/shadow; with UsePAM no, sshd then refuses even keys
# ("User ... not allowed because account is locked"). '*' = no password, not locked.
[ "$(getent shadow "$U" | cut -d: -f2)" = '*' ] || usermod -p '*' "$U"
install -d -m 0755 "$D" "$D/authorized_keys"
install -d -m 0755 /run/sshd                       # privilege-separation dir, normally made by systemd
[ -s "$D/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C celeriac-host -f "$D/host_ed25519"
[ -s "$D/client_key" ]   || ssh-keygen -q -t ed25519 -N '' -C celeriac-client -f "$D/client_key"
for u in root "$U"; do install -m 0644 "$D/client_key.pub" "$D/authorized_keys/$u"; done
cat > "$D/sshd_config" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $D/host_ed25519
PidFile $D/sshd.pid
AuthorizedKeysFile $D/authorized_keys/%u
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes yes
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
LogLevel INFO
CONF
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$D/host_ed25519.pub")" > "$D/known_hosts"
/usr/sbin/sshd -t -f "$D/sshd_config"
if [ -s "$D/sshd.pid" ] && kill -0 "$(cat "$D/sshd.pid")" 2>/dev/null; then
  echo "already running"
else
  /usr/sbin/sshd -f "$D/sshd_config" -E "$D/sshd.log"    # daemonizes, writes PidFile
fi
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
ssh -i "$D/client_key" -o UserKnownHostsFile="$D/known_hosts" -o StrictHostKeyChecking=yes \
    -o BatchMode=yes -p "$PORT" "$U@127.0.0.1" true
echo "sshd up: 127.0.0.1:$PORT users root,$U key $D/client_key known_hosts $D/known_hosts"
