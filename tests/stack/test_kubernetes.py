"""deploy/kubernetes: every manifest validated offline against the Kubernetes API
schemas (kubernetes-validate ships them), the committed ConfigMap equal to the
generator's output, and the DaemonSet's mounts matching the paths that
configs/agent/kubernetes.yaml reads."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml

from stack_helpers import REPO

K8S = REPO / "deploy" / "kubernetes"
GENERATOR = K8S / "generate-configmap.py"
AGENT_CONFIG = REPO / "configs" / "agent" / "kubernetes.yaml"
# The oldest Kubernetes still commonly run, and the newest the package knows.
K8S_VERSIONS = ["1.29.0", "latest"]
MANIFESTS = sorted(K8S.glob("*.yaml"))


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_objects() -> list[dict]:
    return [d for p in MANIFESTS for d in documents(p)]


def by_kind(kind: str) -> list[dict]:
    return [d for d in all_objects() if d["kind"] == kind]


def daemonset() -> dict:
    (ds,) = by_kind("DaemonSet")
    return ds


def container() -> dict:
    (c,) = daemonset()["spec"]["template"]["spec"]["containers"]
    return c


def expand(value):
    """${VAR:-default} -> default, ${VAR} -> '' (as the agent would without the variable)."""
    if isinstance(value, str):
        return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-([^}]*))?\}", lambda m: m.group(1) or "", value)
    return value


def test_manifests_exist():
    names = {p.name for p in MANIFESTS}
    assert {"namespace.yaml", "serviceaccount.yaml", "rbac.yaml", "daemonset.yaml", "service.yaml", "configmap.yaml"} <= names


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_the_api_schemas(version):
    import kubernetes_validate

    if version == "latest":
        version = kubernetes_validate.utils.latest_version()
    kinds = set()
    for path in MANIFESTS:
        for doc in documents(path):
            # strict: unknown fields are errors too
            kubernetes_validate.validate(doc, version, strict=True)
            kinds.add(doc["kind"])
    assert kinds == {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "Service"}


def test_validation_can_fail():
    import kubernetes_validate

    ds = yaml.safe_load((K8S / "daemonset.yaml").read_text())
    ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["readonly"] = True  # misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, "1.29.0", strict=True)


def test_validation_works_offline():
    """The schemas come with the package: validating must not touch the network."""
    code = (
        "import socket\n"
        "def no_network(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = no_network\n"
        "socket.create_connection = no_network\n"
        "import yaml, kubernetes_validate\n"
        f"doc = yaml.safe_load(open({str(K8S / 'daemonset.yaml')!r}))\n"
        "kubernetes_validate.validate(doc, '1.29.0', strict=True)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_rbac_is_minimal():
    (role,) = by_kind("ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    (binding,) = by_kind("ClusterRoleBinding")
    (sa,) = by_kind("ServiceAccount")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]}]
    assert daemonset()["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_daemonset_essentials():
    spec = daemonset()["spec"]["template"]["spec"]
    assert {"operator": "Exists"} in spec["tolerations"]
    c = container()
    res = c["resources"]
    assert set(res["requests"]) == {"cpu", "memory"} and set(res["limits"]) == {"cpu", "memory"}
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert {p["containerPort"] for p in c["ports"]} == {4317, 4318, 9080}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_service_exposes_otlp_and_http():
    (svc,) = by_kind("Service")
    assert {(p["name"], p["port"]) for p in svc["spec"]["ports"]} == {("otlp-grpc", 4317), ("otlp-http", 4318), ("http", 9080)}
    assert svc["spec"]["selector"] == daemonset()["spec"]["selector"]["matchLabels"]
    named_ports = {p["name"] for p in container()["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= named_ports


def test_everything_in_one_namespace():
    (ns,) = by_kind("Namespace")
    name = ns["metadata"]["name"]
    for obj in all_objects():
        if obj["kind"] not in {"Namespace", "ClusterRole", "ClusterRoleBinding"}:
            assert obj["metadata"]["namespace"] == name, obj["kind"]


# --- the generator ----------------------------------------------------------------


def _fake_root(tmp_path: Path) -> Path:
    (tmp_path / "configs" / "agent").mkdir(parents=True)
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "deploy" / "kubernetes").mkdir(parents=True)
    (tmp_path / "configs" / "agent" / "kubernetes.yaml").write_text("data_dir: /var/lib/sluice\n")
    (tmp_path / "pipelines" / "b.yaml").write_text("  indented first line\nno final newline")
    (tmp_path / "pipelines" / "a.yaml").write_text("stages: []\n\n\n")
    (tmp_path / "pipelines" / "notes.txt").write_text("not a pipeline\n")
    ds = yaml.safe_load((K8S / "daemonset.yaml").read_text())
    for vol in ds["spec"]["template"]["spec"]["volumes"]:
        if "configMap" in vol:
            vol["configMap"]["items"] = [
                {"key": "sluice.yaml", "path": "sluice.yaml"},
                {"key": "a.yaml", "path": "pipelines/a.yaml"},
                {"key": "b.yaml", "path": "pipelines/b.yaml"},
            ]
    (tmp_path / "deploy" / "kubernetes" / "daemonset.yaml").write_text(yaml.safe_dump(ds))
    return tmp_path


def _generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GENERATOR), *args], capture_output=True, text=True, timeout=60)


def test_generator_output_is_exact(tmp_path):
    root = _fake_root(tmp_path)
    result = _generate("--root", str(root), "--stdout")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "# GENERATED by deploy/kubernetes/generate-configmap.py from\n"
        "# configs/agent/kubernetes.yaml and pipelines/*.yaml: do not edit, run the script.\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: sluice-config\n"
        "  namespace: observability\n"
        "  labels:\n"
        "    app.kubernetes.io/name: sluice\n"
        "    app.kubernetes.io/component: agent\n"
        "data:\n"
        "  sluice.yaml: |\n"
        "    data_dir: /var/lib/sluice\n"
        "  a.yaml: |+\n"
        "    stages: []\n"
        "\n"
        "\n"
        "  b.yaml: |2-\n"
        "      indented first line\n"
        "    no final newline\n"
    )
    data = yaml.safe_load(result.stdout)["data"]
    assert data == {
        "sluice.yaml": "data_dir: /var/lib/sluice\n",
        "a.yaml": "stages: []\n\n\n",
        "b.yaml": "  indented first line\nno final newline",
    }


def test_generator_check_detects_stale_files(tmp_path):
    root = _fake_root(tmp_path)
    assert _generate("--root", str(root)).returncode == 0
    assert _generate("--root", str(root), "--check").returncode == 0
    (root / "pipelines" / "a.yaml").write_text("stages: [changed]\n")
    result = _generate("--root", str(root), "--check")
    assert result.returncode == 1
    assert "configmap.yaml is stale" in result.stderr
    assert "+    stages: [changed]" in result.stderr
    # a new pipeline also needs its item in the DaemonSet
    assert _generate("--root", str(root)).returncode == 0
    (root / "pipelines" / "c.yaml").write_text("stages: []\n")
    assert _generate("--root", str(root)).returncode == 1
    result = _generate("--root", str(root), "--check")
    assert result.returncode == 1
    assert "- key: c.yaml\n  path: pipelines/c.yaml" in result.stderr


def test_committed_configmap_is_up_to_date():
    assert AGENT_CONFIG.is_file(), "configs/agent/kubernetes.yaml is missing"
    result = _generate("--check")
    assert result.returncode == 0, result.stderr


# --- the DaemonSet mounts what the agent config reads --------------------------------


def _mounts() -> dict[str, dict]:
    """mountPath -> {"readOnly", "volume"}"""
    volumes = {v["name"]: v for v in daemonset()["spec"]["template"]["spec"]["volumes"]}
    return {m["mountPath"]: {"readOnly": m.get("readOnly", False), "volume": volumes[m["name"]]} for m in container()["volumeMounts"]}


def _mount_for(path: str) -> tuple[str, dict] | None:
    best = None
    for mount_path, mount in _mounts().items():
        if PurePosixPath(path) == PurePosixPath(mount_path) or PurePosixPath(mount_path) in PurePosixPath(path).parents:
            if best is None or len(mount_path) > len(best[0]):
                best = (mount_path, mount)
    return best


def _static_prefix(glob: str) -> str:
    parts = []
    for part in PurePosixPath(glob).parts:
        if any(ch in part for ch in "*?["):
            break
        parts.append(part)
    return str(PurePosixPath(*parts))


def _agent() -> dict:
    assert AGENT_CONFIG.is_file(), "configs/agent/kubernetes.yaml is missing"
    return yaml.safe_load(AGENT_CONFIG.read_text())


def _file_globs(agent: dict) -> list[str]:
    globs = []
    for source in (agent.get("sources") or {}).values():
        if source.get("type") in ("files", "file"):
            for key in ("include", "includes", "paths", "path", "glob", "globs"):
                value = source.get(key)
                if isinstance(value, str):
                    globs.append(expand(value))
                elif isinstance(value, list):
                    globs.extend(expand(v) for v in value if isinstance(v, str))
    return globs


def test_config_path_is_the_configmap_item():
    args = container()["args"]
    config_path = args[args.index("--config") + 1]
    assert config_path == "/etc/sluice/sluice.yaml"
    mount_path, mount = _mount_for(config_path)
    cm = mount["volume"]["configMap"]
    assert cm["name"] == "sluice-config"
    rel = str(PurePosixPath(config_path).relative_to(mount_path))
    assert {"key": "sluice.yaml", "path": rel} in cm["items"]


def test_data_dir_is_a_writable_host_directory():
    data_dir = expand(_agent()["data_dir"])
    mount_path, mount = _mount_for(data_dir)
    assert mount["readOnly"] is False
    assert mount["volume"]["hostPath"]["path"] == mount_path == "/var/lib/sluice"


def test_pipelines_dir_holds_the_configmap_pipelines():
    pipelines_dir = expand(_agent()["pipelines_dir"])
    mount_path, mount = _mount_for(pipelines_dir)
    items = mount["volume"]["configMap"]["items"]
    rel = PurePosixPath(pipelines_dir).relative_to(mount_path)
    pipeline_items = [i for i in items if i["key"] != "sluice.yaml"]
    assert pipeline_items, "no pipeline in the ConfigMap"
    for item in pipeline_items:
        assert PurePosixPath(item["path"]).parent == rel
    shipped = sorted(p.name for p in (REPO / "pipelines").glob("*.yaml"))
    assert sorted(i["key"] for i in pipeline_items) == shipped


def test_log_globs_are_mounted_read_only():
    globs = _file_globs(_agent())
    assert "/var/log/pods/*/*/*.log" in globs
    for glob in globs:
        prefix = _static_prefix(glob)
        found = _mount_for(prefix)
        assert found, f"{glob}: nothing mounted at {prefix}"
        mount_path, mount = found
        assert mount["readOnly"] is True, f"{mount_path} should be read-only"
        assert mount["volume"]["hostPath"]["path"] == mount_path
        # a real pod log path matches the glob and lies under the mount
        example = "/var/log/pods/default_web-6d4cf56db6-abcde_0c3f/web/0.log"
        if glob.startswith("/var/log/pods"):
            assert fnmatch.fnmatch(example, glob)


def test_listen_ports_are_container_ports():
    agent = _agent()
    ports = {p["containerPort"] for p in container()["ports"]}
    http = expand(agent["server"]["http_listen_address"])
    assert http.startswith("0.0.0.0:"), "the HTTP port must listen on all interfaces in a pod"
    assert int(http.rsplit(":", 1)[1]) in ports
    for source in agent["sources"].values():
        if source.get("type") == "otlp":
            for value in source.values():
                if isinstance(value, str) and re.match(r"^[\d.]+:\d+$", expand(value)):
                    assert int(expand(value).rsplit(":", 1)[1]) in ports
