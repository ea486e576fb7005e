#!/usr/bin/env bash
# The demo: a local cluster (kwok nodes) and Prometheus, kubetune's CRDs, and the operator and one node
# agent running as local processes with the configuration the chart renders (kwok pods do not execute,
# so the images cannot run inside the cluster here).
#
#   deploy/local/demo.sh        # start (or restart) everything, print how to reach it
#   deploy/local/demo.sh down   # stop everything
set -euo pipefail
cd "$(dirname "$0")/../.."
state=.kubetune
py=.venv/bin/python

stop_processes() {
    for name in operator agent load; do
        if [[ -f $state/$name.pid ]]; then
            kill "$(cat "$state/$name.pid")" 2>/dev/null || true
            rm -f "$state/$name.pid"
        fi
    done
}

if [[ ${1:-up} == down ]]; then
    stop_processes
    $py deploy/local/localcluster.py down
    exit 0
fi

stop_processes
$py deploy/local/localcluster.py up --state-dir "$state/cluster"
export KUBECONFIG=$PWD/$state/cluster/kube/kubeconfig
export PATH=$HOME/.cache/kubetune/bin:$PATH
prometheus_url=$(cat "$state/cluster/prometheus-url")

kubectl apply --server-side -f deploy/crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s -f deploy/crds/ >/dev/null

if [[ -f deploy/local/demo-workload.sh ]]; then
    bash deploy/local/demo-workload.sh "$state" "$prometheus_url"
fi
if command -v .venv/bin/kubetune-operator >/dev/null && $py -c 'import kubetune.main' 2>/dev/null; then
    KUBETUNE_PROMETHEUS_URL=$prometheus_url nohup .venv/bin/kubetune-operator >"$state/operator.log" 2>&1 &
    echo $! >"$state/operator.pid"
fi
if $py -c 'import kubetune_agent.main' 2>/dev/null; then
    # One agent stands for kwok-node-0; it tunes this machine, so the demo's node policy is Recommend.
    NODE_NAME=kwok-node-0 nohup .venv/bin/kubetune-agent >"$state/agent.log" 2>&1 &
    echo $! >"$state/agent.pid"
fi

cat <<TXT

kubetune demo is up.
  export KUBECONFIG=$KUBECONFIG
  export PATH=\$HOME/.cache/kubetune/bin:\$PATH
  kubectl get nodes                       # 3 kwok nodes
  kubectl get kubetune -A                 # every kubetune object
  kubectl get performancepolicies -A -w   # decisions, live
  kubectl get events -A --field-selector reason!=Scheduled -w
  Prometheus: $prometheus_url
  logs: $state/operator.log $state/agent.log
  stop: make demo-down
TXT
