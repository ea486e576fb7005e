"""The operator, the node agent and the CLIs run without the official `kubernetes` package (issue 12: its
generated models were ~45 MiB of the operator's memory, and kopf imports it whenever it is installed, so
the image leaves it out). The test venv keeps it for test helpers: here a subprocess makes it
unimportable, imports every entry point and builds every client, so an import cannot creep back."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml

pytestmark = pytest.mark.unit

SCRIPT = textwrap.dedent("""\
    import sys
    sys.modules["kubernetes"] = None  # any `import kubernetes...` now raises ImportError
    from types import SimpleNamespace

    import kopf
    from kopf._core.intents import causes, piggybacking

    import kubetune.cli, kubetune.main, kubetune_agent.main
    from kubetune.checks import gather_check_input
    from kubetune.report import gather
    from kubetune.kube import Kube, load_api_client
    from kubetune.podwatch import PodWatch
    from kubetune_agent.main import NodeTuningWatch
    from kubetune_agent.settings import AgentSettings

    api = load_api_client()
    Kube(api), Kube(), PodWatch(api)
    agent = SimpleNamespace(collector=SimpleNamespace(latency_targets=()))
    watch = NodeTuningWatch(AgentSettings(node_name="n1"), agent)
    assert agent.collector.latency_targets == ("127.0.0.1:6443",), agent.collector.latency_targets
    info = kubetune.main.login()
    assert isinstance(info, kopf.ConnectionInfo) and info.token == "t" and info.server == "https://127.0.0.1:6443"
    # kopf saw no client library (no login_via_client registered); ours is the login handler it calls.
    assert not piggybacking.has_client()
    handlers = kopf.get_default_registry()._activities.get_handlers(activity=causes.Activity.AUTHENTICATION)
    assert [(h.id, h._fallback) for h in handlers] == [("login", False)], handlers
    loaded = sorted(name for name, module in sys.modules.items() if name.startswith("kubernetes") and module)
    assert not loaded, loaded
    print("ok")
    """)


def test_every_entry_point_imports_and_builds_its_clients_without_the_kubernetes_package(tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                          env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
