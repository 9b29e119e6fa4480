#!/bin/sh
# Makes the 6 Valkey nodes one cluster (3 primaries + 1 replica each). Idempotent: a
# cluster already formed is left as it is. Runs in the Valkey image (has sh and valkey-cli).
set -eu
N=6
# With the redis-acl component: the admin user (its password in REDISCLI_AUTH, which
# valkey-cli reads from the environment, so it is never on a command line).
cli() {
  if [ -n "${REDIS_USER:-}" ]; then valkey-cli --user "$REDIS_USER" "$@"; else valkey-cli "$@"; fi
}
HOSTS=""
i=0
while [ "$i" -lt "$N" ]; do
  HOSTS="$HOSTS redis-cluster-$i.redis-cluster-headless:6379"
  i=$((i + 1))
done
for h in $HOSTS; do
  host=${h%:*}
  tries=0
  until cli -h "$host" ping >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -gt 120 ] && { echo "cluster-init: $host never answered" >&2; exit 1; }
    sleep 2
  done
done
if cli -h redis-cluster-0.redis-cluster-headless cluster info | grep -q '^cluster_state:ok'; then
  echo "cluster-init: cluster already formed"
  exit 0
fi
echo "cluster-init: creating the cluster from$HOSTS"
# shellcheck disable=SC2086
cli --cluster create $HOSTS --cluster-replicas 1 --cluster-yes
