#!/usr/bin/env bash
# Build the pinned control-plane binaries from Go modules into a cache outside the checkout.
#
#   deploy/local/build-binaries.sh          # build what is missing, reuse what is cached
#
# Cache: ${KUBETUNE_CACHE:-~/.cache/kubetune}/bin/<tool>-<version>. A binary that exists is never
# rebuilt; a failed build leaves no half-written binary (go build writes to a temp name first).
# Versions are pinned in deploy/local/versions.env.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${KUBETUNE_CACHE:-$HOME/.cache/kubetune}
bin="$cache/bin"
work="$cache/build"
mkdir -p "$bin" "$work"

die() { echo "kubetune build: $*" >&2; exit 1; }
command -v go >/dev/null || die "go is not installed; install Go >= 1.25 (the machine image ships it)"
export GOFLAGS=-buildvcs=false CGO_ENABLED=0

# wrapper <dir> <module> <version> [replace lines...]: a go.mod requiring one module at one version.
wrapper() {
    local dir=$1 module=$2 version=$3
    shift 3
    mkdir -p "$dir"
    {
        echo "module kubetune.local/build/$(basename "$dir")"
        echo "go 1.25"
        echo "require $module $version"
        for line in "$@"; do echo "replace $line"; done
    } >"$dir/go.mod"
}

# build <name> <version> <wrapper dir> <package>: go build unless bin/<name>-<version> exists.
build() {
    local name=$1 version=$2 dir=$3 pkg=$4 out="$bin/$1-$2"
    if [[ -x $out ]]; then
        echo "  $name $version: cached"
        return
    fi
    local start=$SECONDS
    echo "  $name $version: building $pkg (a cold build takes minutes on 2 cores)"
    # go get with the pinned version: a bare package path would resolve to the newest release.
    (cd "$dir" && go get "$pkg@$version" >"$dir/get.log" 2>&1) \
        || die "fetching $pkg failed, see $dir/get.log"
    (cd "$dir" && go build -trimpath -ldflags "-s -w $5" -o "$out.tmp" "$pkg") >"$dir/build-$name.log" 2>&1 \
        || die "building $name failed, see $dir/build-$name.log"
    mv "$out.tmp" "$out"
    echo "  $name $version: built in $((SECONDS - start)) s"
}

echo "kubetune: binaries in $bin"

# Kubernetes: k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
# ./staging paths, which only work inside its own repository. The wrapper replaces each one with
# its published v0.Y.Z release instead.
k8s_dir="$work/kubernetes-$KUBERNETES_VERSION"
k8s_tools=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)
k8s_missing=0
for tool in "${k8s_tools[@]}"; do [[ -x $bin/$tool-$KUBERNETES_VERSION ]] || k8s_missing=1; done
if ((k8s_missing)); then
    k8s_gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])') \
        || die "cannot download k8s.io/kubernetes@$KUBERNETES_VERSION from the Go module proxy"
    staging_version="v0.${KUBERNETES_VERSION#v1.}"
    mapfile -t replaces < <(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$k8s_gomod" | sort -u \
        | while read -r m; do echo "$m => $m $staging_version"; done)
    [[ ${#replaces[@]} -gt 10 ]] || die "found no staging replaces in $k8s_gomod"
    wrapper "$k8s_dir" k8s.io/kubernetes "$KUBERNETES_VERSION" "${replaces[@]}"
fi
k8s_ldflags="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2) -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
for tool in "${k8s_tools[@]}"; do
    build "$tool" "$KUBERNETES_VERSION" "$k8s_dir" "k8s.io/kubernetes/cmd/$tool" "$k8s_ldflags"
done

etcd_dir="$work/etcd-$ETCD_VERSION"
[[ -x $bin/etcd-$ETCD_VERSION ]] || wrapper "$etcd_dir" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
build etcd "$ETCD_VERSION" "$etcd_dir" go.etcd.io/etcd/server/v3 ""

kwok_dir="$work/kwok-$KWOK_VERSION"
[[ -x $bin/kwok-$KWOK_VERSION ]] || wrapper "$kwok_dir" sigs.k8s.io/kwok "$KWOK_VERSION"
build kwok "$KWOK_VERSION" "$kwok_dir" sigs.k8s.io/kwok/cmd/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"

# kwok's default pod stages, which localcluster.py extends so pods report their containers'
# resources as a kubelet does (the API server allows pods/resize only then).
stages="$cache/kwok-stages-$KWOK_VERSION"
if [[ ! -f $stages/pod-ready.yaml ]]; then
    kwok_src=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') \
        || die "cannot download sigs.k8s.io/kwok@$KWOK_VERSION"
    mkdir -p "$stages.tmp"
    cp "$kwok_src"/kustomize/stage/pod/fast/pod-{ready,complete,delete}.yaml "$stages.tmp/"
    rm -rf "$stages" && mv "$stages.tmp" "$stages"
fi

helm_dir="$work/helm-$HELM_VERSION"
[[ -x $bin/helm-$HELM_VERSION ]] || wrapper "$helm_dir" helm.sh/helm/v3 "$HELM_VERSION"
build helm "$HELM_VERSION" "$helm_dir" helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"

# containerd v2 for the real node (realnode.py): the daemon, its CLI (ctr imports images) and the runc
# shim. Kubernetes 1.36 drops support for containerd 1.x, so not Debian's 1.6.
containerd_dir="$work/containerd-$CONTAINERD_VERSION"
containerd_module=github.com/containerd/containerd/v2
[[ -x $bin/containerd-$CONTAINERD_VERSION && -x $bin/ctr-$CONTAINERD_VERSION && -x $bin/containerd-shim-runc-v2-$CONTAINERD_VERSION ]] \
    || wrapper "$containerd_dir" "$containerd_module" "$CONTAINERD_VERSION"
for tool in containerd ctr containerd-shim-runc-v2; do
    build "$tool" "$CONTAINERD_VERSION" "$containerd_dir" "$containerd_module/cmd/$tool" \
        "-X $containerd_module/version.Version=$CONTAINERD_VERSION"
done

# Stable names for the current pins, so scripts and users can put $bin on PATH.
for tool in "${k8s_tools[@]}"; do
    ln -sf "$tool-$KUBERNETES_VERSION" "$bin/$tool"
done
ln -sf "etcd-$ETCD_VERSION" "$bin/etcd"
ln -sf "kwok-$KWOK_VERSION" "$bin/kwok"
ln -sf "helm-$HELM_VERSION" "$bin/helm"
for tool in containerd ctr containerd-shim-runc-v2; do ln -sf "$tool-$CONTAINERD_VERSION" "$bin/$tool"; done
echo "kubetune: binaries ready in $bin"
