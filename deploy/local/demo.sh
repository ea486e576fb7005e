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

kubectl apply -f deploy/local/demo.yaml >/dev/null

# The scripted load: cAdvisor-shaped series for the demo pods, scraped by the local Prometheus.
loadgen_port=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
nohup $py deploy/local/loadgen.py --port "$loadgen_port" --kubeconfig "$KUBECONFIG" \
    --selector kubetune.io/demo=true --profile deploy/local/demo-profile.json >"$state/load.log" 2>&1 &
echo $! >"$state/load.pid"
echo "[{\"targets\": [\"127.0.0.1:$loadgen_port\"], \"labels\": {\"job\": \"cadvisor-demo\"}}]" \
    >"$state/cluster/prometheus/targets/cadvisor-demo.json"

# The operator and one agent as local processes, configured as the chart configures them; the rate
# window and subquery step are shortened to the local Prometheus' 1 s scrape interval.
KUBETUNE_PROMETHEUS_URL=$prometheus_url KUBETUNE_RATE_WINDOW=30s KUBETUNE_QUERY_STEP=5s KUBETUNE_TICK=2 \
    KUBETUNE_RECOMMENDATION_WINDOW=1h KUBETUNE_RECOMMENDATION_REFRESH=1m KUBETUNE_LEADER_ELECTION=false \
    KUBETUNE_LIVENESS_PORT=0 KUBETUNE_METRICS_PORT=0 \
    nohup .venv/bin/kubetune-operator >"$state/operator.log" 2>&1 &
echo $! >"$state/operator.pid"
# The agent stands for kwok-node-0 but reads this machine; its node policy is Recommend, so it
# publishes a plan and writes nothing.
NODE_NAME=kwok-node-0 KUBETUNE_JOURNAL_DIR=$PWD/$state/agent-journal KUBETUNE_METRICS_PORT=0 \
    nohup .venv/bin/kubetune-agent >"$state/agent.log" 2>&1 &
echo $! >"$state/agent.pid"

cat <<TXT

kubetune demo is up.
  export KUBECONFIG=$KUBECONFIG
  export PATH=\$HOME/.cache/kubetune/bin:\$PATH
  kubectl get nodes                       # 3 kwok nodes
  kubectl get kubetune -A                 # every kubetune object
  kubectl get performancepolicies -n demo -w        # decisions, live (the load changes every 2 minutes)
  kubectl get performancepolicy checkout -n demo -o yaml   # signals, recommendation, lastAction, history
  kubectl get nodetuning kwok-node-0 -o yaml        # the agent's plan for this machine (Recommend)
  kubectl get events -A --field-selector reason!=Scheduled -w
  Prometheus: $prometheus_url
  logs: $state/operator.log $state/agent.log
  stop: make demo-down
TXT
