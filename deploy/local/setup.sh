#!/usr/bin/env bash
# Install everything the demo and the tests need on a fresh machine, reusing what is already there:
# Debian's prometheus and prometheus-node-exporter, what the real node needs beside its own binaries
# (runc, CNI plugins, socat, gcc), a virtualenv with kubetune and its test extras, and the pinned
# Kubernetes and containerd binaries (built once into ~/.cache/kubetune, see build-binaries.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."

die() { echo "kubetune setup: $*" >&2; exit 1; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v prometheus-node-exporter >/dev/null || missing+=(prometheus-node-exporter)
# The real node (deploy/local/realnode.py): runc and the CNI plugins beside the containerd we build,
# socat for the API server relay, gcc and libc6-dev for the static pause binary, busybox-static for a
# test image; iproute2 and util-linux (nsenter, unshare) are on every Debian. Chromium renders the
# report's HTML in its test (headless, no network).
for package in runc containernetworking-plugins socat iptables gcc libc6-dev busybox-static iproute2 chromium; do
    installed "$package" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "kubetune setup: apt-get install ${missing[*]}"
    [[ $(id -u) == 0 ]] || die "installing ${missing[*]} needs root: sudo apt-get install ${missing[*]}"
    apt-get update -qq >/dev/null || die "apt-get update failed (no access to Debian's package mirror?)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
    # Debian's postinst may start a system Prometheus on :9090; the tests run their own on free ports.
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python >= 3.11 is needed (found $("$python" --version))"
if [[ ! -x .venv/bin/python ]]; then
    echo "kubetune setup: creating .venv"
    "$python" -m venv .venv || die "python -m venv failed (apt-get install python3-venv?)"
fi
stamp=.venv/.kubetune-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    echo "kubetune setup: pip install -e .[test]"
    .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1
    .venv/bin/pip install -q -e '.[test]' >.venv/pip-install.log 2>&1 \
        || { tail -20 .venv/pip-install.log >&2; die "pip install failed (full log: .venv/pip-install.log)"; }
    touch "$stamp"
fi

bash deploy/local/build-binaries.sh
