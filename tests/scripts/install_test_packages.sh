#!/usr/bin/env bash
# The Debian packages the integration tests need, installed in one go (as root; idempotent).
# The tests' own start scripts install what is missing too; this saves them the time and makes
# a missing package fail here, loudly, instead of in the middle of a test session.
#   Slurm: slurmctld slurmd slurm-client munge      Grid Engine: gridengine-*
#   SSH channel: openssh-server (sshd) + openssh-client   launchers: parallel, mpich
#   second "host": iproute2 (ip netns), util-linux (nsenter, unshare)   staging: rsync
#   run reports (tests/integration/test_run_report.py): chromium, headless
#   AMQP transport: rabbitmq-server (started by tests/scripts/start_rabbitmq.sh)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
HOST=$(hostname -s)
PKGS="slurmctld slurmd slurm-client munge gridengine-master gridengine-exec gridengine-client
      openssh-server openssh-client parallel mpich iproute2 util-linux procps rsync chromium
      rabbitmq-server"
missing=$(for p in $PKGS; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null \
            | grep -q "install ok installed" || echo "$p"; done)
[ -z "$missing" ] && { echo "test packages: all installed"; exit 0; }
# Grid Engine asks where its master is at install time.
for o in gridengine-common gridengine-master gridengine-client gridengine-exec; do
  echo "$o shared/gridenginemaster string $HOST"; echo "$o shared/gridenginecell string default"
  echo "$o shared/gridengineconfig boolean true"; done | debconf-set-selections
getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >> /etc/hosts
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends $missing >/dev/null
echo "test packages: installed" $missing
