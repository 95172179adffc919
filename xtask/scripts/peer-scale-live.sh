#!/bin/bash
# Side-by-side LIVE scale test (the catch-up one is ../shared/tools/peer-scale.sh, which this
# follows step for step): the operator starts and syncs, then N servers are applied; the time
# until all N StatefulSets report readyReplicas=1 (kwok pods) and the operator's peak RSS are
# printed. Our clock starts before the apply; the peer's after its status patches (a head start in
# its favour). Usage: peer-scale-live.sh craftplane|lexfrei N
# Needs: the project's dev cluster up (cargo xtask cluster up in $PROJ), lexfrei manager built at
# $PEER_BIN (../shared/tools/build-peer.sh); ours is OUR_BIN, else the `cargo build --profile
# image` binary (the profile the image ships).
set -uo pipefail
side=$1; N=${2:-1000}; PROJ=${PROJ:-$PWD}
export KUBECONFIG=$(cd "$PROJ" && cargo xtask cluster kubeconfig 2>/dev/null | tail -1)
K=$(ls ~/.cache/craftplane/bin/kubectl-* | head -1)
ns=bench-$side
$K create namespace $ns >/dev/null 2>&1
gen() { python3 - "$side" "$N" "$ns" <<'PY'
import sys
side,n,ns=sys.argv[1],int(sys.argv[2]),sys.argv[3]
for i in range(n):
    if side=='lexfrei':
        print(f"""---
apiVersion: mc.k8s.lex.la/v1beta1
kind: PaperMCServer
metadata: {{name: mc-{i:05d}, namespace: {ns}}}
spec:
  updateStrategy: build-pin
  version: "1.21.4"
  build: 100
  updateSchedule: {{checkCron: "0 3 * * *", maintenanceWindow: {{enabled: false, cron: "0 4 * * 0"}}}}
  gracefulShutdown: {{timeout: 60s}}
  rcon: {{enabled: false, passwordSecret: {{name: unused, key: password}}}}
  service: {{type: ClusterIP}}
  podTemplate: {{spec: {{containers: [{{name: papermc, resources: {{requests: {{cpu: 10m, memory: 64Mi}}}}}}]}}}}""")
    else:
        print(f"""---
apiVersion: craftplane.io/v1alpha1
kind: MinecraftServer
metadata: {{name: mc-{i:05d}, namespace: {ns}}}
spec: {{sku: bench, eula: true, type: PAPER, version: "1.21.4"}}""")
PY
}
if [[ $side == lexfrei ]]; then
  grep -q hub.docker.com /etc/hosts || echo "127.0.0.1 hub.docker.com" >>/etc/hosts   # keep its version lookups on loopback
  BIN=${PEER_BIN:?set PEER_BIN to the peer manager binary}
  ARGS=(--kubeconfig "$KUBECONFIG" --manage-crds=true --webui-enabled=false --leader-elect=false --health-probe-bind-address=127.0.0.1:18081 --metrics-bind-address=0 --log-level=error)
  # First start installs its CRDs.
  "$BIN" "${ARGS[@]}" >/tmp/peer-$side-crd.log 2>&1 & P=$!
  for i in $(seq 60); do $K get crd papermcservers.mc.k8s.lex.la >/dev/null 2>&1 && break; sleep 1; done
  kill $P 2>/dev/null; wait $P 2>/dev/null
  $K wait --for=condition=Established crd/papermcservers.mc.k8s.lex.la --timeout=60s >/dev/null
  # Its own CRD check then fails ("no kind is registered for v1.CustomResourceDefinition"): CRDs are in, so skip it.
  ARGS=(--kubeconfig "$KUBECONFIG" --manage-crds=false --webui-enabled=false --leader-elect=false --health-probe-bind-address=127.0.0.1:18081 --metrics-bind-address=0 --log-level=error)
else
  BIN=${OUR_BIN:-${CARGO_TARGET_DIR:-$PROJ/target}/image/craftplane}
  ARGS=(controller --http-addr 127.0.0.1:18080 --slp-interval 0 --log-format json)
  (cd "$PROJ" && $K apply --server-side -f crds/ >/dev/null) && $K wait --for=condition=Established crd --all --timeout=60s >/dev/null
  cat <<Y | $K apply -f - >/dev/null
apiVersion: craftplane.io/v1alpha1
kind: Sku
metadata: {name: bench}
spec: {resources: {cpu: 100m, memory: 512Mi, storage: 1Gi}, jvm: {heapPercent: 75}, maxPlayers: 10}
Y
fi
gen >/tmp/peer-$side.yaml
# Live: the operator runs (and has synced) before the servers arrive.
"$BIN" "${ARGS[@]}" >/tmp/peer-$side.log 2>&1 & P=$!
if [[ $side == lexfrei ]]; then
  for i in $(seq 60); do curl -s -o /dev/null http://127.0.0.1:18081/readyz && break; sleep 1; done
else
  for i in $(seq 60); do curl -sf http://127.0.0.1:18080/readyz >/dev/null && break; sleep 1; done
fi
sleep 5
t0=$(date +%s.%N)
SECONDS=0
$K apply --server-side -f /tmp/peer-$side.yaml >/dev/null || { echo "apply failed"; exit 1; }
echo "applied $N in ${SECONDS}s"
if [[ $side == lexfrei ]]; then
  # Offline, the peer needs a known desired version in status (it asks Docker Hub otherwise). Its
  # clock starts after the patches: a head start in its favour (it works on the first ones meanwhile).
  SECONDS=0
  seq 0 $((N-1)) | xargs -P 8 -I{} sh -c "$K -n $ns patch papermcserver mc-\$(printf %05d {}) --subresource=status --type=merge -p '{\"status\":{\"desiredVersion\":\"1.21.4\",\"desiredBuild\":100}}' >/dev/null"
  echo "status patched in ${SECONDS}s"
fi
start=$(date +%s.%N); peak=0; ready=0
[[ $side == lexfrei ]] || start=$t0
while :; do
  sleep 2
  kill -0 $P 2>/dev/null || { echo "operator exited: $(tail -2 /tmp/peer-$side.log)"; exit 1; }
  rss=$(awk '/VmRSS/{print $2}' /proc/$P/status); ((rss>peak)) && peak=$rss
  ready=$($K -n $ns get sts -o jsonpath='{range .items[*]}{.status.readyReplicas}{"\n"}{end}' 2>/dev/null | grep -c '^1$')
  now=$(date +%s.%N); el=$(python3 -c "print(round($now-$start,1))")
  (( $(date +%s) % 30 < 2 )) && echo "  $el s: $ready/$N ready, RSS $((rss/1024)) MiB"
  ((ready>=N)) && break
  python3 -c "import sys; sys.exit(0 if $now-$start < 3600 else 1)" || { echo "timeout at $ready/$N"; break; }
done
sleep 20; rss_after=$(awk '/VmRSS/{print $2}' /proc/$P/status)
cpu=$(awk '{print ($14+$15)/100}' /proc/$P/stat)
kill $P; wait $P 2>/dev/null
echo "RESULT side=$side N=$N converged_s=$el ready=$ready peak_rss_mib=$((peak/1024)) rss_after_20s_mib=$((rss_after/1024)) cpu_s=$cpu"
