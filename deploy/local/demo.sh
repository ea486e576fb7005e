#!/usr/bin/env bash
# The demo, for real: a local cluster (kwok nodes) and Prometheus, one real kubelet node (containerd,
# runc, in a network namespace of its own), kubetune's chart installed on it with the image built here
# from the Dockerfile, and the demo service (deploy/local/demo-service) under a scripted real load.
# Real latency drives real in-place resizes of a real container's cgroup. Needs root (the real node).
#
#   deploy/local/demo.sh        # start (or restart) everything, print how to reach it
#   deploy/local/demo.sh down   # stop everything
set -euo pipefail
cd "$(dirname "$0")/../.."
state=.kubetune/cluster
py=.venv/bin/python

if [[ ${1:-up} == down ]]; then
    $py deploy/local/realstack.py down --state-dir "$state"
    $py deploy/local/localcluster.py down --state-dir "$state"
    exit 0
fi

$py deploy/local/realstack.py down --state-dir "$state" >/dev/null 2>&1 || true
$py deploy/local/localcluster.py up --real-node --state-dir "$state"
export KUBECONFIG=$PWD/$state/kube/kubeconfig
export PATH=$HOME/.cache/kubetune/bin:$PATH
prometheus_url=$(cat "$state/prometheus-url")

kubectl apply --server-side -f deploy/crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s -f deploy/crds/ >/dev/null

# Builds the images (cached by content: minutes the first time), imports them into the real node,
# `helm install`s the chart there, deploys the demo service and its policy, starts the load.
$py deploy/local/realstack.py up --state-dir "$state"

cat <<TXT

kubetune demo is up: the operator and the agent run as pods on real-node-0, installed by Helm.
  export KUBECONFIG=$KUBECONFIG
  export PATH=\$HOME/.cache/kubetune/bin:\$PATH
  kubectl get pods -A -o wide                              # the chart's pods and the demo service, on real-node-0
  kubectl get performancepolicies -n demo -w               # decisions, live (the load changes every 3-4 minutes)
  kubectl get performancepolicy checkout -n demo -o yaml   # signals, p95, lastAction with evidence, verification
  kubectl get pod -n demo -l app=checkout -o jsonpath='{.items[0].spec.containers[0].resources}'
  kubectl get events -n demo -w
  kubectl get nodetuning real-node-0 -o yaml               # the agent pod's plan for the node (Recommend)
  kubectl logs -n kubetune-system deploy/kubetune-operator -f
  Prometheus: $prometheus_url
  load: $state/realstack/logs/load.log (p95 as the clients see it, one line a phase)
  stop: make demo-down
TXT
