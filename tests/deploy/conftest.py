"""Offline checks of the deployment: the kustomize overlays rendered with `kubectl kustomize`,
validated against Kubernetes and the vendored CRD schemas, and checked against the code."""

import os
import shutil
import subprocess

import pytest
import yaml

from services import registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K8S = os.path.join(ROOT, "k8s")
OVERLAYS = ("dev", "prod")
SERVICES = registry.NAMES


def render(overlay):
    """The overlay's manifests as a list of dicts (kubectl kustomize, offline)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: the deployment checks need `kubectl kustomize` (see README)")
    out = subprocess.run(
        [kubectl, "kustomize", os.path.join(K8S, "overlays", overlay)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="session", params=OVERLAYS)
def overlay(request):
    """(name, documents) for each overlay."""
    return request.param, render(request.param)


def of_kind(documents, kind):
    return [d for d in documents if d["kind"] == kind]
