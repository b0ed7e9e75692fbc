#!/usr/bin/env bash
# Rolling deploy of the tollgate proxy to the edge hosts: one host at a time, drained from the
# load balancer first, health-checked after the restart, and put back only when healthy.
set -euo pipefail

# Hosts of the edge pool, in deploy order.
HOSTS=(edge-ams-1 edge-ams-2 edge-fra-1 edge-fra-2)

# Seconds to wait for in-flight requests after draining a host.
DRAIN_SECONDS=45

# Health checks after a restart before the deploy gives up on the host.
HEALTH_RETRIES=12

# The release to deploy: the first argument, or the latest tag.
RELEASE="${1:-$(git describe --tags --abbrev=0)}"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*"; }

drain() {
  log "draining $1"
  curl -fsS -X POST "https://lb.internal/pools/edge/members/$1/drain" >/dev/null
  sleep "$DRAIN_SECONDS"
}

undrain() {
  log "enabling $1"
  curl -fsS -X POST "https://lb.internal/pools/edge/members/$1/enable" >/dev/null
}

healthy() {
  local host=$1 i
  for ((i = 1; i <= HEALTH_RETRIES; i++)); do
    if curl -fsS "http://$host:7399/healthz" >/dev/null 2>&1; then
      return 0
    fi
    sleep 5
  done
  return 1
}

deploy_host() {
  local host=$1
  drain "$host"
  log "installing tollgate $RELEASE on $host"
  ssh "$host" "sudo /opt/tollgate/bin/install-release $RELEASE && sudo systemctl restart tollgate"
  if ! healthy "$host"; then
    log "ERROR: $host is not healthy after $HEALTH_RETRIES checks; leaving it drained"
    exit 1
  fi
  undrain "$host"
}

log "deploying tollgate $RELEASE to ${#HOSTS[@]} hosts"
for host in "${HOSTS[@]}"; do
  deploy_host "$host"
done
log "done"
