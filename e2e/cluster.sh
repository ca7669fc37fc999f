#!/usr/bin/env bash
# A real, local Kubernetes control plane on loopback for tests and the demo (issue 2).
#
#   e2e/cluster.sh up [--with-scheduler] [--with-controller-manager] [--with-kwok] [--all]
#   e2e/cluster.sh down
#   e2e/cluster.sh env        # prints exactly two `export` lines: eval "$(e2e/cluster.sh env)"
#   e2e/cluster.sh status
#
# `up` starts etcd and kube-apiserver (binaries from `make tools`, linked in .tools/bin) on free
# loopback ports, with a CA, serving and client certificates (client in group system:masters),
# a service-account key pair and RBAC, writes <state>/kubeconfig (embedded data; kubectl and
# kube-rs accept it) and waits for /readyz. The flags also start kube-scheduler,
# kube-controller-manager and KWOK (fake nodes annotated kwok.x-k8s.io/node=fake). `up` is
# idempotent (an up and healthy plane is reused; missing optional components are started) and
# safe against concurrent callers (flock). `down` stops exactly the PIDs it recorded and removes
# the state dir.
#
# State: ${AUTOGLM_CLUSTER_DIR:-<checkout>/.cluster}: pki/, etcd/ (data), logs/<component>.log,
# pids/<component>.pid, ports.env, kubeconfig.
#
# Notes on the flags chosen:
# - --endpoint-reconciler-type=none: with a loopback advertise address the default reconciler
#   refuses to write the `kubernetes` Endpoints; nothing here needs them.
# - ServiceAccount admission is disabled (always, also with a controller manager): pods can be
#   created in a brand-new namespace without waiting for its `default` ServiceAccount, and the
#   plane behaves the same whichever components run. TokenRequest still works (signing key set).
# - etcd runs with --unsafe-no-fsync: test data is throwaway and fsync on a shared disk is the
#   slowest part of a write.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="${AUTOGLM_CLUSTER_DIR:-$root/.cluster}"
bin="$root/.tools/bin"
# The lock lives outside the state dir, which `down` removes.
lock="${TMPDIR:-/tmp}/open-autoglm-cluster-$(printf '%s' "$state" | sha256sum | cut -c1-16).lock"
ready_timeout="${AUTOGLM_CLUSTER_TIMEOUT:-90}" # seconds, per component

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---- processes ---------------------------------------------------------------------------
# A recorded PID counts as ours only while its start time (field 22 of /proc/<pid>/stat, in
# clock ticks since boot) is the one recorded when we started it, so a recycled PID is never
# signalled.
pid_of() { [[ -f "$state/pids/$1.pid" ]] && cat "$state/pids/$1.pid" || true; }
start_time_of() { # <pid>: prints the start time, fails when the process does not exist
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }" # drop "pid (comm) ", comm may contain spaces
  # A zombie (state Z) has exited; it only waits for its new parent (init) to reap it.
  [[ "${stat%% *}" != Z ]] || return 1
  awk '{print $20}' <<<"$stat"
}
alive() { # <component>
  local pid now
  pid="$(pid_of "$1")"
  [[ -n "$pid" ]] || return 1
  now="$(start_time_of "$pid")" || return 1
  [[ "$now" == "$(cat "$state/pids/$1.start" 2>/dev/null)" ]]
}

start_proc() { # <component> <binary> args...
  local name="$1" binary; shift
  binary="$(readlink -f "$bin/$1")"; shift
  [[ -x "$binary" ]] || die "$bin/$name missing: run 'make tools' first"
  mkdir -p "$state/logs" "$state/pids"
  # setsid: own session, so a Ctrl-C or kill of the calling test does not take the plane down.
  # All inherited fds (the flock fd 9, the caller's pipes) are closed or redirected, so no
  # caller waits on us. The background job is not a process-group leader, so setsid execs in
  # place and $! is the component's own PID.
  setsid "$binary" "$@" </dev/null >>"$state/logs/$name.log" 2>&1 9>&- &
  echo $! >"$state/pids/$name.pid"
  start_time_of $! >"$state/pids/$name.start"
}

stop_proc() { # <component>
  local name="$1" pid i
  pid="$(pid_of "$name")"
  if [[ -n "$pid" ]] && alive "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      alive "$name" || break
      sleep 0.1
    done
    if alive "$name"; then
      log "$name (pid $pid) did not stop in 10 s; killing"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do alive "$name" || break; sleep 0.1; done
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$state/pids/$name.pid" "$state/pids/$name.start"
}

# ---- ports -------------------------------------------------------------------------------
taken_ports=" "
# Ports are drawn below the kernel's ephemeral range (ip_local_port_range, usually from 32768
# up): a port in that range may be the local end of some outgoing connection, and binding it
# then fails with "address already in use" even though nothing listens there. A port counts as
# free when no socket in any state uses it.
free_port() { # sets $port (no subshell, so $taken_ports keeps track within one run)
  local p i lo=32768
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  (( lo > 12000 )) || die "ephemeral port range starts at $lo: no room below it for our ports"
  for ((i = 0; i < 200; i++)); do
    p=$(( (RANDOM * 32768 + RANDOM) % (lo - 11000) + 11000 ))
    [[ "$taken_ports" == *" $p "* ]] && continue
    if ! ss -Htan "sport = :$p" 2>/dev/null | grep -q .; then
      taken_ports+="$p "
      port="$p"
      return 0
    fi
  done
  die "no free loopback port found"
}

# ---- certificates ------------------------------------------------------------------------
gen_pki() {
  local d="$state/pki"
  mkdir -p "$d"
  command -v openssl >/dev/null || die "openssl not found (apt-get install -y openssl)"
  # ECDSA P-256: key generation is instant; kube-apiserver, kubectl and rustls accept it.
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$d/ca.key" -sha256 -days 3650 -subj "/CN=open-autoglm-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$d/ca.crt" 2>/dev/null
  sign() { # <name> <subject> <extensions>
    openssl ecparam -name prime256v1 -genkey -noout -out "$d/$1.key" 2>/dev/null
    openssl req -new -key "$d/$1.key" -subj "$2" -out "$d/$1.csr" 2>/dev/null
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 3650 -sha256 -extfile <(printf '%s\n' "$3") -out "$d/$1.crt" 2>/dev/null
    rm -f "$d/$1.csr"
  }
  sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign admin "/O=system:masters/CN=open-autoglm-admin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  # Front proxy (aggregation layer / request-header authentication): without it every
  # component logs "missing content for CA bundle ... requestheader-client-ca-file".
  sign front-proxy-client "/CN=front-proxy-client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  # Service-account token signing key pair (RSA: the most widely accepted for JWT RS256).
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$d/sa.key" 2>/dev/null
  openssl pkey -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  chmod 600 "$d"/*.key
}

write_kubeconfig() { # <port>
  local d="$state/pki" tmp="$state/kubeconfig.tmp"
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: open-autoglm-test
  cluster:
    server: https://127.0.0.1:$1
    certificate-authority-data: $(base64 -w0 <"$d/ca.crt")
users:
- name: open-autoglm-admin
  user:
    client-certificate-data: $(base64 -w0 <"$d/admin.crt")
    client-key-data: $(base64 -w0 <"$d/admin.key")
contexts:
- name: open-autoglm-test
  context:
    cluster: open-autoglm-test
    user: open-autoglm-admin
    namespace: default
current-context: open-autoglm-test
EOF
  chmod 600 "$tmp"
  mv "$tmp" "$state/kubeconfig"
}

# ---- health ------------------------------------------------------------------------------
https_ok() { # <port> <path>: 0 when the endpoint answers 200 "ok" (client cert auth)
  local d="$state/pki"
  [[ "$(curl -fsS --max-time 2 --cacert "$d/ca.crt" --cert "$d/admin.crt" --key "$d/admin.key" \
    "https://127.0.0.1:$1$2" 2>/dev/null)" == ok ]]
}
insecure_ok() { # <port> <path>: self-signed serving certs of scheduler / controller manager
  [[ "$(curl -fsSk --max-time 2 "https://127.0.0.1:$1$2" 2>/dev/null)" == ok ]]
}

wait_for() { # <component> <description> <command...>
  local name="$1" what="$2" start=$SECONDS; shift 2
  until "$@"; do
    if ! alive "$name"; then
      log "$name exited; last lines of $state/logs/$name.log:"
      tail -n 30 "$state/logs/$name.log" >&2 || true
      return 1
    fi
    if (( SECONDS - start > ready_timeout )); then
      log "$name not $what after ${ready_timeout} s; last lines of $state/logs/$name.log:"
      tail -n 30 "$state/logs/$name.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

base_healthy() {
  [[ -f "$state/ports.env" && -f "$state/kubeconfig" ]] || return 1
  # shellcheck source=/dev/null
  source "$state/ports.env"
  alive etcd && alive kube-apiserver && https_ok "$APISERVER_PORT" /readyz
}

# ---- components --------------------------------------------------------------------------
start_base() {
  local t0=$SECONDS etcd_port peer_port api_port
  [[ -d "$state" ]] && stop_all_and_wipe
  mkdir -p "$state"
  free_port; etcd_port="$port"
  free_port; peer_port="$port"
  free_port; api_port="$port"
  gen_pki
  printf 'ETCD_PORT=%s\nETCD_PEER_PORT=%s\nAPISERVER_PORT=%s\n' "$etcd_port" "$peer_port" "$api_port" >"$state/ports.env"

  start_proc etcd etcd \
    --name=open-autoglm --data-dir="$state/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="open-autoglm=http://127.0.0.1:$peer_port" --initial-cluster-state=new \
    --unsafe-no-fsync --log-level=warn
  wait_for etcd "healthy" etcd_healthy "$etcd_port" || return 1

  local d="$state/pki"
  start_proc kube-apiserver kube-apiserver \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --cert-dir="$d" --tls-cert-file="$d/apiserver.crt" --tls-private-key-file="$d/apiserver.key" \
    --client-ca-file="$d/ca.crt" \
    --requestheader-client-ca-file="$d/ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$d/front-proxy-client.crt" --proxy-client-key-file="$d/front-proxy-client.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$d/sa.pub" --service-account-signing-key-file="$d/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode=Node,RBAC \
    --endpoint-reconciler-type=none \
    --disable-admission-plugins=ServiceAccount \
    --allow-privileged=true --profiling=false
  write_kubeconfig "$api_port"
  wait_for kube-apiserver "ready (/readyz)" https_ok "$api_port" /readyz || return 1
  log "etcd (:$etcd_port) and kube-apiserver (https://127.0.0.1:$api_port) ready in $(( SECONDS - t0 )) s"
}

etcd_healthy() { # <port>
  curl -fsS --max-time 2 "http://127.0.0.1:$1/health" 2>/dev/null | grep -q '"health":"true"'
}

ensure_port_var() { # <VAR>: reuse the recorded port or pick and record a new one
  local var="$1"
  if [[ -z "${!var:-}" ]]; then
    free_port
    printf -v "$var" '%s' "$port"
    echo "$var=${!var}" >>"$state/ports.env"
  fi
}

start_scheduler() {
  alive kube-scheduler && { log "kube-scheduler already running"; return 0; }
  ensure_port_var SCHEDULER_PORT
  start_proc kube-scheduler kube-scheduler --kubeconfig="$state/kubeconfig" \
    --authentication-kubeconfig="$state/kubeconfig" --authorization-kubeconfig="$state/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --leader-elect=false
  wait_for kube-scheduler "healthy" insecure_ok "$SCHEDULER_PORT" /healthz || return 1
  log "kube-scheduler ready (:$SCHEDULER_PORT)"
}

start_controller_manager() {
  alive kube-controller-manager && { log "kube-controller-manager already running"; return 0; }
  ensure_port_var CONTROLLER_MANAGER_PORT
  local d="$state/pki"
  start_proc kube-controller-manager kube-controller-manager --kubeconfig="$state/kubeconfig" \
    --authentication-kubeconfig="$state/kubeconfig" --authorization-kubeconfig="$state/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$CONTROLLER_MANAGER_PORT" --leader-elect=false \
    --service-account-private-key-file="$d/sa.key" --root-ca-file="$d/ca.crt" \
    --cluster-signing-cert-file="$d/ca.crt" --cluster-signing-key-file="$d/ca.key" \
    --service-cluster-ip-range=10.0.0.0/24 --controllers='*'
  wait_for kube-controller-manager "healthy" insecure_ok "$CONTROLLER_MANAGER_PORT" /healthz || return 1
  log "kube-controller-manager ready (:$CONTROLLER_MANAGER_PORT)"
}

start_kwok() {
  alive kwok && { log "kwok already running"; return 0; }
  ensure_port_var KWOK_PORT
  local stages
  stages="$(dirname "$(readlink -f "$bin/kwok")")/../share/kwok/stages.yaml"
  [[ -f "$stages" ]] || die "KWOK stages file $stages missing: run 'make tools'"
  # Manages only Nodes annotated kwok.x-k8s.io/node=fake (and their pods), as kwokctl does;
  # node leases keep them Ready for kube-controller-manager's node lifecycle controller.
  start_proc kwok kwok --kubeconfig="$state/kubeconfig" --config="$stages" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --manage-nodes-with-label-selector= \
    --cidr=10.0.0.1/24 --node-ip=10.0.0.1 --node-lease-duration-seconds=40 \
    --server-address="127.0.0.1:$KWOK_PORT"
  wait_for kwok "healthy" http_ok "$KWOK_PORT" /healthz || return 1
  log "kwok ready (:$KWOK_PORT)"
}

http_ok() { curl -fsS --max-time 2 "http://127.0.0.1:$1$2" >/dev/null 2>&1; }

stop_all_and_wipe() {
  local c
  for c in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_proc "$c"; done
  rm -rf "$state"
}

# ---- verbs -------------------------------------------------------------------------------
cmd_up() {
  local with_scheduler=0 with_cm=0 with_kwok=0 a t0=$SECONDS
  for a in "$@"; do
    case "$a" in
      --with-scheduler) with_scheduler=1 ;;
      --with-controller-manager) with_cm=1 ;;
      --with-kwok) with_kwok=1 ;;
      --all) with_scheduler=1 with_cm=1 with_kwok=1 ;;
      -h|--help) usage ;;
      *) log "unknown flag '$a'"; usage ;;
    esac
  done
  command -v curl >/dev/null || die "curl not found (apt-get install -y curl)"
  mkdir -p "$(dirname "$lock")"
  exec 9>"$lock"
  flock -w 600 9 || die "timed out waiting for $lock (another cluster.sh?)"
  if base_healthy; then
    log "already up and healthy (state $state, https://127.0.0.1:$APISERVER_PORT)"
  else
    [[ -d "$state" ]] && log "state $state present but not healthy; restarting"
    if ! start_base; then
      log "start failed; logs kept in $state/logs (run '$0 down' to clean up)"
      exit 1
    fi
    # shellcheck source=/dev/null
    source "$state/ports.env"
  fi
  (( with_cm )) && { start_controller_manager || exit 1; }
  (( with_scheduler )) && { start_scheduler || exit 1; }
  (( with_kwok )) && { start_kwok || exit 1; }
  log "up in $(( SECONDS - t0 )) s; use: eval \"\$($0 env)\""
}

cmd_down() {
  exec 9>"$lock"
  flock -w 600 9 || die "timed out waiting for $lock"
  if [[ ! -d "$state" ]]; then
    log "not running (no $state)"
    return 0
  fi
  stop_all_and_wipe
  log "down; removed $state"
}

cmd_env() {
  printf 'export KUBECONFIG=%q\n' "$state/kubeconfig"
  printf 'export PATH=%q:$PATH\n' "$bin"
}

cmd_status() {
  local c rc=0
  [[ -d "$state" ]] || { echo "down (no $state)"; return 3; }
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
    if [[ -f "$state/pids/$c.pid" ]]; then
      if alive "$c"; then echo "$c: running (pid $(pid_of "$c"))"; else echo "$c: DEAD (pid $(pid_of "$c"))"; rc=1; fi
    fi
  done
  if base_healthy; then echo "readyz: ok (https://127.0.0.1:$APISERVER_PORT)"; else echo "readyz: NOT ok"; rc=1; fi
  return "$rc"
}

verb="${1:-}"
[[ $# -gt 0 ]] && shift
case "$verb" in
  up) cmd_up "$@" ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  *) usage ;;
esac
