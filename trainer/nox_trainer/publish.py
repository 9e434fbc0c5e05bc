"""Publishing a model to the ConfigMap a RiskModel names, through the Kubernetes API.

The ConfigMap gets the model under its binaryData key, the label the sidecars watch
(nox.dev/risk-model=true) and annotations: nox.dev/sha256 (the digest the sidecars and the
operator check the bytes against) and nox.dev/training (the report: when, on how many events,
how it evaluated). One server-side apply, so the bytes and their digest change together, and
other keys of the ConfigMap are left alone.

The API client is the standard library's: the trainer needs two requests (read the model in
force, apply the new one), which does not warrant the `kubernetes` package and its
dependencies in the image. In a pod it uses the ServiceAccount's token and CA; outside one,
--kube-server, --kube-token-file and --kube-ca-file say where to go.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass

MODEL_LABEL = "nox.dev/risk-model"
DIGEST_ANNOTATION = "nox.dev/sha256"
REPORT_ANNOTATION = "nox.dev/training"
FIELD_MANAGER = "nox-trainer"
# ConfigMaps hold at most 1 MiB of data; the API server refuses more.
MAX_MODEL_BYTES = 1024 * 1024 - 4096

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class PublishError(Exception):
    """The model could not be read from or written to its ConfigMap; the message says why."""


@dataclass(frozen=True)
class Target:
    namespace: str
    name: str
    key: str

    @staticmethod
    def parse(text: str) -> Target:
        parts = text.split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"expected NAMESPACE/CONFIGMAP/KEY, got {text!r}")
        return Target(*parts)

    def __str__(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name} key {self.key}"


class Kube:
    """The two calls the trainer makes, with a bearer token over TLS."""

    def __init__(self, server: str | None, token_file: str | None, ca_file: str | None):
        if server is None:
            host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
            if not host or not port:
                raise PublishError("not in a pod (no KUBERNETES_SERVICE_HOST): give --kube-server")
            server = f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}"
        self.server = server.rstrip("/")
        self.token_file = token_file or f"{SERVICE_ACCOUNT}/token"
        self.context = ssl.create_default_context(cafile=ca_file or f"{SERVICE_ACCOUNT}/ca.crt")

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None):
        # Read per request: the kubelet rotates projected tokens.
        with open(self.token_file, encoding="ascii") as f:
            token = f.read().strip()
        req = urllib.request.Request(self.server + path, data=body, method=method)
        req.add_header("Authorization", f"Bearer {token}")
        req.add_header("Accept", "application/json")
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=30) as res:
                return json.loads(res.read())
        except urllib.error.HTTPError as e:
            status = e.code
            try:
                message = json.loads(e.read()).get("message", "")
            except ValueError:
                message = ""
            if status == 404 and method == "GET":
                return None
            raise PublishError(f"{method} {path}: {status} {message}".rstrip()) from None
        except (urllib.error.URLError, OSError) as e:
            raise PublishError(f"{method} {path}: {e}") from None

    def current_model(self, t: Target) -> bytes | None:
        """The model in force: the key's bytes, or None when the ConfigMap or key is absent."""
        cm = self._request("GET", f"/api/v1/namespaces/{t.namespace}/configmaps/{t.name}")
        data = (cm or {}).get("binaryData") or {}
        return base64.b64decode(data[t.key]) if t.key in data else None

    def publish(self, t: Target, model: bytes, sha256: str, report: dict) -> str:
        """Applies the model; returns the ConfigMap's resourceVersion."""
        if len(model) > MAX_MODEL_BYTES:
            raise PublishError(f"the model is {len(model)} bytes; a ConfigMap holds at most {MAX_MODEL_BYTES}")
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": t.name,
                "namespace": t.namespace,
                "labels": {MODEL_LABEL: "true"},
                "annotations": {
                    DIGEST_ANNOTATION: sha256,
                    REPORT_ANNOTATION: json.dumps(report, separators=(",", ":")),
                },
            },
            "binaryData": {t.key: base64.b64encode(model).decode("ascii")},
        }
        applied = self._request(
            "PATCH",
            f"/api/v1/namespaces/{t.namespace}/configmaps/{t.name}?fieldManager={FIELD_MANAGER}&force=true",
            json.dumps(body).encode(),
            "application/apply-patch+yaml",
        )
        return applied["metadata"]["resourceVersion"]
