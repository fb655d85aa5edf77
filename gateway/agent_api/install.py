"""``GET /agent/v1/install/{token}.yaml``: the Kubernetes manifests of the agent, with its token.

What ``kubectl apply -f <url>`` fetches. The token must still be able to register (known, unused,
not revoked, not expired); otherwise 404 with a YAML comment that says what to do (kubectl shows only
the status, a person opening the link sees the words). The response is never cached: it holds a secret.
"""

from __future__ import annotations

from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath

from connectors.install_manifest import DEFAULT_IMAGE, render_install_manifest
from connectors.server.tokens import AGENT_NAMESPACE, token_is_installable
from gateway.deps import Runtime

__all__ = ["install_manifest"]

YAML = "application/yaml"
_NOT_VALID = (
    "# This install link does not work any more: its registration token is unknown, already used,\n"
    "# replaced by a newer one, or expired (tokens are valid for a limited time and register one agent).\n"
    "# Open the cluster's page in Metacloud, re-issue the token, and copy the new command.\n"
)


@get("/agent/v1/install/{filename:str}", tags=["agent"], summary="The agent's install manifest for a token",
     opt={"public": "the registration token in the path is the credential; it is checked in the handler"},
     cache_control=CacheControlHeader(no_store=True), media_type=YAML)
async def install_manifest(filename: FromPath[str], runtime: Runtime) -> Response[str]:
    token = filename.removesuffix(".yaml")
    if token == filename or not await token_is_installable(runtime.sessions, token):
        return Response(_NOT_VALID, status_code=404, media_type=YAML)
    body = render_install_manifest(server_url=runtime.settings.public_url.rstrip("/"), token=token,
                                   image=DEFAULT_IMAGE, namespace=AGENT_NAMESPACE)
    return Response(body, media_type=YAML)
