#!/usr/bin/env bash
# Package the Helm chart for release, as an OCI artifact:
#   deploy/release/package-chart.sh                      # lint, check versions, write dist/kubetune-<version>.tgz
#   deploy/release/package-chart.sh oci://REGISTRY/PATH  # ... and `helm push` it there (helm registry login first)
# The chart's version and appVersion must equal the Python package's version (pyproject.toml), which is
# the image tag the chart defaults to. HELM (default: helm on PATH, else the pinned one), CHART and OUT
# (default dist/) override the paths.
set -euo pipefail
cd "$(dirname "$0")/../.."

die() { echo "package-chart: $*" >&2; exit 1; }

helm=${HELM:-$(command -v helm || echo "${KUBETUNE_CACHE:-$HOME/.cache/kubetune}/bin/helm")}
[[ -x $helm ]] || die "no helm: install it or set HELM (make setup builds the pinned one)"
chart=${CHART:-deploy/helm/kubetune}
out=${OUT:-dist}

version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
chart_version=$(sed -n 's/^version: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$chart/Chart.yaml")
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$chart/Chart.yaml")
[[ $chart_version == "$version" && $app_version == "$version" ]] \
    || die "Chart.yaml version $chart_version / appVersion $app_version differ from pyproject.toml's $version: set all three"

# The floor the chart declares (kubeVersion): lint renders for it, not for helm's default v1.20.
"$helm" lint --strict "$chart" --kube-version 1.35.0 >/dev/null 2>&1 || die "helm lint --strict failed: run it for the reasons"
mkdir -p "$out"
# helm package follows the symlinks (files/crds, files/kubetune-rules.yaml): the archive holds their content.
"$helm" package "$chart" --destination "$out" >/dev/null 2>&1 || die "helm package failed"
archive="$out/kubetune-$version.tgz"
echo "$archive sha256:$(sha256sum "$archive" | cut -d' ' -f1)"
if [[ $# -gt 0 ]]; then
    [[ $1 == oci://* ]] || die "push target must be oci://REGISTRY/PATH, got $1"
    "$helm" push "$archive" "$1"
fi
