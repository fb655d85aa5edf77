"""The ``metacloud-agent`` command line and where the credential is kept."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
from pathlib import Path

import pytest

from connectors.agent import FileCredentialStore, SecretCredentialStore, StoredCredential
from connectors.agent.credentials import CredentialStoreError
from connectors.agent.main import build_parser, main
from connectors.runtimes.kubernetes import kube_api_client
from tests.connectors.kube_emulator import kube_emulator


def test_version_prints_agent_and_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == "metacloud-agent 0.1.0 (protocol v1)"


def test_without_a_server_it_says_where_to_copy_the_command_from(capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METACLOUD_SERVER", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["--token", "t"])
    assert exited.value.code == 2
    assert "copy the command from the cluster connect wizard" in capsys.readouterr().err


def test_settings_come_from_the_environment_in_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("METACLOUD_SERVER", "https://gw.example.com")
    monkeypatch.setenv("METACLOUD_TOKEN", "mct_x")
    args = build_parser().parse_args([])
    assert (args.runtime, args.server, args.token) == ("kubernetes", "https://gw.example.com", "mct_x")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert build_parser().parse_args([]).runtime == "local"


def test_sigterm_stops_a_bare_host_agent_cleanly(tmp_path: Path) -> None:
    """The real entry point, as a process: it retries an unreachable gateway until SIGTERM, then exits 0."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "connectors.agent.main", "--server", "http://127.0.0.1:9", "--token", "t",
         "--state-dir", str(tmp_path), "--runtime", "local"],
        stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 15
    assert proc.stderr is not None
    line = proc.stderr.readline()
    while "connection refused" not in line and time.monotonic() < deadline:
        line = proc.stderr.readline()
    proc.terminate()
    assert proc.wait(timeout=10) == 0
    assert "connection refused by 127.0.0.1" in line


async def test_the_credential_file_is_private_and_replaced_atomically(tmp_path: Path) -> None:
    store = FileCredentialStore(tmp_path / "state")
    await store.save(StoredCredential(server_url="https://gw", cluster_id="c1", credential="mca_1"))
    await store.save(StoredCredential(server_url="https://gw", cluster_id="c1", credential="mca_2"))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    loaded = await store.load()
    assert loaded is not None and loaded.credential == "mca_2" and loaded.saved_at is not None
    assert list(store.path.parent.iterdir()) == [store.path]
    await store.clear()
    assert await store.load() is None


async def test_in_kubernetes_the_credential_lives_in_the_pre_created_secret() -> None:
    async with kube_emulator(nodes=False) as kube:
        kube.add("v1/secrets", {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                "metadata": {"name": "metacloud-agent-credential", "namespace": "metacloud-agent"}})
        api = kube_api_client(host=kube.url)
        store = SecretCredentialStore("metacloud-agent", "metacloud-agent-credential", api)
        assert await store.load() is None
        await store.save(StoredCredential(server_url="https://gw", cluster_id="c1", credential="mca_1"))
        secret = kube.get("v1/secrets", "metacloud-agent", "metacloud-agent-credential")
        assert secret is not None
        assert json.loads(base64.b64decode(secret["data"]["credential.json"]))["credential"] == "mca_1"
        loaded = await store.load()
        assert loaded is not None and loaded.cluster_id == "c1"

        missing = SecretCredentialStore("metacloud-agent", "nope", api)
        with pytest.raises(CredentialStoreError, match="cannot read Secret metacloud-agent/nope: HTTP 404"):
            await missing.load()
        await asyncio.to_thread(api.close)
