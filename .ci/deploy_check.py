"""The structured checks of .ci/deploy-check, one subcommand each; run with .venv/deploy's Python.

  ecs         the task definition against botocore's RegisterTaskDefinition input shape, plus the
              sidecar wiring (health check, dependsOn, token secret, non-root, read-only, logs)
  k8s         the PodMonitor against a minimal schema (it is a CRD), kustomization.yaml against the
              files, and the wiring between deployment, ConfigMap, Service and PodMonitor
  ecs_pgbouncer  docker/ecs/pgbouncer-task-definition.json: its shape, pidMode task, the sink's
              files on one task volume in both containers, the image's path for it; check-config
  k8s_pgbouncer  docker/k8s/pgbouncer: kustomization, the broker's sink and PgBouncer's auth_file
              and pid file agreeing, one volume and uid, a shared process namespace; check-config
  dashboard   the Grafana dashboard's structure; writes its PromQL as recording rules for promtool
  metrics     every credential_broker_* name in the dashboard and alert files exists in src/metrics/
  configs     `credential-broker check-config` on docker/config.toml, the ConfigMap's config and
              the ECS config with the task definition's environment
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
ADMIN_PORT = 2776
TOKEN_PATH = "/run/secrets/broker-token"
HEALTHCHECK = ["CMD", "/usr/local/bin/credential-broker", "healthcheck"]

errors: list[str] = []


def check(condition: bool, message: str) -> None:
    if not condition:
        errors.append(message)


def finish(what: str) -> None:
    if errors:
        for e in errors:
            print(f"  FAIL {what}: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"  ok   {what}")


def load_yaml(path: pathlib.Path):
    return yaml.safe_load(path.read_text())


# --- ECS ---------------------------------------------------------------------------------------


def register_task_definition_shape(task: dict) -> None:
    import botocore.session
    import botocore.validate
    from botocore.exceptions import ParamValidationError

    client = botocore.session.get_session().create_client(
        "ecs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    shape = client.meta.service_model.operation_model("RegisterTaskDefinition").input_shape
    try:
        botocore.validate.validate_parameters(task, shape)
    except ParamValidationError as e:
        errors.append(f"RegisterTaskDefinition input: {e}")


def ecs() -> None:
    task = json.loads((DOCKER / "ecs/task-definition.json").read_text())
    register_task_definition_shape(task)

    check(task.get("networkMode") == "awsvpc", "networkMode must be awsvpc (Fargate)")
    check("FARGATE" in task.get("requiresCompatibilities", []), "requiresCompatibilities lacks FARGATE")
    check(task.get("taskRoleArn") != task.get("executionRoleArn"), "task role and execution role must differ")
    containers = {c["name"]: c for c in task["containerDefinitions"]}
    broker = containers.get("credential-broker")
    if broker is None:
        errors.append("no container named credential-broker")
        return finish("ecs/task-definition.json")
    check(broker.get("essential") is True, "broker must be essential")
    check(broker.get("readonlyRootFilesystem") is True, "broker root filesystem must be read-only")
    check(broker.get("user", "root").split(":")[0] not in ("", "0", "root"), "broker must not run as root")
    check(broker.get("healthCheck", {}).get("command") == HEALTHCHECK, f"broker healthCheck must be {HEALTHCHECK}")
    check(
        any(p.get("containerPort") == ADMIN_PORT for p in broker.get("portMappings", [])),
        f"broker needs a port mapping for the admin port {ADMIN_PORT}",
    )
    check(
        broker.get("dockerLabels", {}).get("ECS_PROMETHEUS_EXPORTER_PORT") == str(ADMIN_PORT),
        "dockerLabels.ECS_PROMETHEUS_EXPORTER_PORT must name the admin port",
    )
    config_path = {e["name"]: e["value"] for e in broker.get("environment", [])}.get("CREDENTIAL_BROKER_CONFIG")
    copied = re.findall(r"^COPY docker/ecs/config\.toml (\S+)$", (DOCKER / "Dockerfile").read_text(), re.M)
    check(config_path is not None and copied == [config_path],
          f"broker CREDENTIAL_BROKER_CONFIG ({config_path}) is not where the Dockerfile puts docker/ecs/config.toml ({copied})")
    policy = json.loads((DOCKER / "ecs/execution-role-policy.json").read_text())
    injectable = {
        r
        for s in policy["Statement"]
        if "secretsmanager:GetSecretValue" in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
        for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    }
    for name, c in containers.items():
        check(c.get("logConfiguration", {}).get("logDriver") == "awslogs", f"{name}: logDriver must be awslogs")
        tokens = [s["valueFrom"] for s in c.get("secrets", []) if s["name"] == "BROKER_TOKEN"]
        check(len(tokens) == 1, f"{name}: needs the BROKER_TOKEN secret")
        for arn in tokens:
            check(arn in injectable, f"{name}: the execution role policy does not allow reading {arn}")
        if name != "credential-broker":
            check(
                {"containerName": "credential-broker", "condition": "HEALTHY"} in c.get("dependsOn", []),
                f"{name}: must dependsOn credential-broker HEALTHY",
            )
    finish("ecs/task-definition.json (botocore RegisterTaskDefinition shape, sidecar wiring)")


# --- Kubernetes --------------------------------------------------------------------------------

DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
# The part of the Prometheus Operator's PodMonitor CRD (monitoring.coreos.com/v1) that
# podmonitor.yaml uses; unknown keys are rejected so a typo does not pass silently.
PODMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": LABELS,
                "annotations": LABELS,
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "podMetricsEndpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": LABELS, "matchExpressions": {"type": "array"}},
                },
                "namespaceSelector": {"type": "object"},
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "action": {"enum": ["replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep", "lowercase", "uppercase", "keepequal", "dropequal"]},
                                        "sourceLabels": {"type": "array", "items": {"type": "string"}},
                                        "separator": {"type": "string"},
                                        "targetLabel": {"type": "string"},
                                        "regex": {"type": "string"},
                                        "modulus": {"type": "integer"},
                                        "replacement": {"type": "string"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def ecs_pgbouncer(binary: str) -> None:
    task = json.loads((DOCKER / "ecs/pgbouncer-task-definition.json").read_text())
    register_task_definition_shape(task)
    containers = {c["name"]: c for c in task["containerDefinitions"]}
    broker, bouncer = containers.get("credential-broker"), containers.get("pgbouncer")
    if broker is None or bouncer is None:
        errors.append("needs containers credential-broker and pgbouncer")
        return finish("ecs/pgbouncer-task-definition.json")
    check(task.get("pidMode") == "task", 'pidMode must be "task": the broker signals PgBouncer')
    check(broker.get("user") == bouncer.get("user") and broker.get("user", "root").split(":")[0] not in ("", "0", "root"),
          "broker and PgBouncer must run as one non-root uid (a signal needs it)")
    for name in ("credential-broker", "pgbouncer"):
        check(containers[name].get("readonlyRootFilesystem") is True, f"{name}: root filesystem must be read-only")
    for name, c in containers.items():
        if name != "credential-broker":
            check({"containerName": "credential-broker", "condition": "HEALTHY"} in c.get("dependsOn", []),
                  f"{name}: must dependsOn credential-broker HEALTHY (the auth_file exists once it is ready)")
    env = {e["name"]: e["value"] for e in broker.get("environment", [])}
    dockerfile = (DOCKER / "Dockerfile").read_text()
    copied = re.findall(r"^COPY docker/ecs/pgbouncer\.toml (\S+)$", dockerfile, re.M)
    check(copied == [env.get("CREDENTIAL_BROKER_CONFIG")],
          f"CREDENTIAL_BROKER_CONFIG is not where the Dockerfile puts docker/ecs/pgbouncer.toml ({copied})")
    config_text = (DOCKER / "ecs/pgbouncer.toml").read_text()
    sinks = [s for s in tomllib.loads(config_text).get("sinks", []) if s.get("format") == "pgbouncer"]
    check(len(sinks) == 1, "ecs/pgbouncer.toml needs one pgbouncer sink")
    volumes = {v["name"] for v in task.get("volumes", [])}
    def mount_of(container, path):
        return next((m for m in container.get("mountPoints", [])
                     if path.startswith(m["containerPath"].rstrip("/") + "/")), None)
    for sink in sinks:
        check(sink.get("on_change_signal") == "SIGHUP", "the sink must send SIGHUP (PgBouncer's reload)")
        for path in (sink["path"], sink.get("on_change_pidfile", "")):
            a, b = mount_of(broker, path), mount_of(bouncer, path)
            check(a is not None and b is not None and a["sourceVolume"] == b["sourceVolume"] in volumes
                  and a["containerPath"] == b["containerPath"],
                  f"{path} must be on one task volume mounted at one path in both containers")
            if a is not None:
                check(re.search(r"^COPY --from=binary --chown=65532:65532 \S+ %s$" % re.escape(a["containerPath"]), dockerfile, re.M) is not None,
                      f"the image must hold {a['containerPath']} owned by 65532 (a Fargate bind mount is root's otherwise)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = pathlib.Path(tmp)
        embedded = tmp_path / "pgbouncer.toml"
        mount = mount_of(broker, sinks[0]["path"]) if sinks else None
        embedded.write_text(config_text.replace(mount["containerPath"], tmp) if mount else config_text)
        env.pop("CREDENTIAL_BROKER_CONFIG", None)
        env.update({s["name"]: "deploy-check-token-0123456789" for s in broker.get("secrets", [])})
        run_check_config(binary, embedded, env, "docker/ecs/pgbouncer.toml with the task definition's environment")
    finish("ecs/pgbouncer-task-definition.json (RegisterTaskDefinition shape, pidMode, shared volume, uid, image path)")


def check_kustomization(k: pathlib.Path, left_out: set[str] = frozenset()) -> None:
    """The kustomization in `k` lists every manifest beside it but `left_out`."""
    listed = set(load_yaml(k / "kustomization.yaml").get("resources", []))
    present = {p.name for p in k.glob("*.yaml")} - {"kustomization.yaml"} - left_out
    check(listed == present, f"{k.name}/kustomization.yaml resources {sorted(listed)} differ from the manifests {sorted(present)}")


def k8s() -> None:
    import jsonschema

    k = DOCKER / "k8s"
    podmonitor = load_yaml(k / "podmonitor.yaml")
    for e in jsonschema.Draft202012Validator(PODMONITOR_SCHEMA).iter_errors(podmonitor):
        errors.append(f"podmonitor.yaml: {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}")
    if errors:
        return finish("k8s: PodMonitor (minimal CRD schema)")

    check_kustomization(k, {"secret.example.yaml"})

    deployment = load_yaml(k / "deployment.yaml")
    pod = deployment["spec"]["template"]
    brokers = [c for c in pod["spec"].get("initContainers", []) if c["name"] == "credential-broker"]
    check(len(brokers) == 1, "deployment: the broker must be an init container (native sidecar)")
    if not brokers:
        return finish("k8s wiring")
    broker = brokers[0]
    check(broker.get("restartPolicy") == "Always", "deployment: the broker init container needs restartPolicy: Always")
    ports = {p["name"]: p["containerPort"] for p in broker.get("ports", [])}
    check(ports.get("broker-admin") == ADMIN_PORT, f"deployment: broker port broker-admin must be {ADMIN_PORT}")
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = broker.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") == "broker-admin", f"deployment: {probe} must GET {path} on broker-admin")
    sc = broker.get("securityContext", {})
    check(sc.get("readOnlyRootFilesystem") is True, "deployment: broker readOnlyRootFilesystem")
    check(sc.get("allowPrivilegeEscalation") is False, "deployment: broker allowPrivilegeEscalation false")
    check(sc.get("runAsNonRoot") is True and sc.get("runAsUser") == 65532, "deployment: broker runAsNonRoot, runAsUser 65532")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], "deployment: broker drops ALL capabilities")
    check(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "deployment: broker seccompProfile RuntimeDefault")
    mounts = {m["mountPath"]: m for m in broker.get("volumeMounts", [])}
    check(TOKEN_PATH in mounts, f"deployment: the broker must mount the token at {TOKEN_PATH}")
    apps = pod["spec"]["containers"]
    check(
        all({"name": "BROKER_URL", "value": "http://127.0.0.1:2775"} in c.get("env", []) for c in apps),
        "deployment: every app container needs BROKER_URL=http://127.0.0.1:2775",
    )

    config = load_yaml(k / "configmap.yaml")["data"]["config.toml"]
    check(re.search(r'^admin_listen\s*=\s*"0\.0\.0\.0:%d"' % ADMIN_PORT, config, re.M) is not None,
          f"configmap: admin_listen must be 0.0.0.0:{ADMIN_PORT} (probes and scrapes reach the pod IP)")
    check(re.search(r'^token_file\s*=\s*"%s"' % re.escape(TOKEN_PATH), config, re.M) is not None,
          f"configmap: token_file must be {TOKEN_PATH}, where the Secret is mounted")

    labels = pod["metadata"]["labels"]
    selector = podmonitor["spec"]["selector"].get("matchLabels", {})
    check(selector.items() <= labels.items(), "podmonitor selector does not match the pod template's labels")
    check(all(e.get("port") in ports for e in podmonitor["spec"]["podMetricsEndpoints"]), "podmonitor names a port the broker lacks")
    service = load_yaml(k / "service.yaml")
    check(service["spec"]["selector"].items() <= labels.items(), "service selector does not match the pod template's labels")
    check(all(p.get("targetPort") in ports or p.get("targetPort") == ADMIN_PORT for p in service["spec"]["ports"]), "service targetPort is not the admin port")
    account = load_yaml(k / "serviceaccount.yaml")
    check(pod["spec"].get("serviceAccountName") == account["metadata"]["name"], "deployment does not use the service account")
    check("eks.amazonaws.com/role-arn" in account["metadata"].get("annotations", {}), "service account lacks the IRSA annotation")
    finish("k8s: PodMonitor (minimal CRD schema), kustomization, sidecar wiring")


def k8s_pgbouncer(binary: str) -> None:
    k = DOCKER / "k8s/pgbouncer"
    check_kustomization(k)
    data = load_yaml(k / "configmap.yaml")["data"]
    config = tomllib.loads(data["config.toml"])
    ini = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition("=") for line in data["pgbouncer.ini"].splitlines())
        if not key.lstrip().startswith(("#", "[")) and value
    )
    sinks = [s for s in config.get("sinks", []) if s.get("format") == "pgbouncer"]
    check(len(sinks) == 1, "pgbouncer: the broker config needs one pgbouncer sink")
    spec = load_yaml(k / "deployment.yaml")["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}
    broker, bouncer = containers.get("credential-broker"), containers.get("pgbouncer")
    check(broker is not None and bouncer is not None, "pgbouncer: needs containers credential-broker and pgbouncer")
    if not sinks or broker is None or bouncer is None:
        return finish("k8s PgBouncer wiring")
    sink = sinks[0]
    check(ini.get("auth_file") == sink["path"], f"pgbouncer: auth_file {ini.get('auth_file')} is not the sink's path {sink['path']}")
    check(ini.get("pidfile") == sink.get("on_change_pidfile"), "pgbouncer: pidfile is not the sink's on_change_pidfile")
    check(sink.get("on_change_signal") == "SIGHUP", "pgbouncer: the sink must send SIGHUP (PgBouncer's reload)")
    check(ini.get("auth_type") == "scram-sha-256", "pgbouncer: auth_type must be scram-sha-256")
    check(spec.get("shareProcessNamespace") is True, "pgbouncer: the pod must share its process namespace (the broker signals PgBouncer)")
    uid = lambda c: c.get("securityContext", {}).get("runAsUser", spec.get("securityContext", {}).get("runAsUser"))
    check(uid(broker) == uid(bouncer) is not None, "pgbouncer: broker and PgBouncer must run as one uid (a signal needs it)")
    def mount_of(container, path):
        return next((m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
    for path in (sink["path"], sink["on_change_pidfile"]):
        a, b = mount_of(broker, path), mount_of(bouncer, path)
        check(a is not None and b is not None and a["name"] == b["name"] and a["mountPath"] == b["mountPath"],
              f"pgbouncer: {path} must be on one volume mounted at one path in both containers")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = pathlib.Path(tmp)
        token = tmp_path / "broker-token"
        token.write_text("deploy-check-token-0123456789\n")
        # The shared volume exists only in the pod: its paths are moved under a scratch directory.
        mount = mount_of(broker, sink["path"])["mountPath"]
        (tmp_path / "run").mkdir()
        embedded = tmp_path / "config.toml"
        embedded.write_text(data["config.toml"].replace(mount, str(tmp_path / "run")))
        run_check_config(binary, embedded, {"CREDENTIAL_BROKER_AUTH__TOKEN_FILE": str(token)},
                         "docker/k8s/pgbouncer/configmap.yaml data.config.toml")
    finish("k8s PgBouncer: kustomization, auth_file, pid file, shared volume, process namespace, uid")


def k8s_node(binary: str) -> None:
    """The node-level mode: the socket on one hostPath for broker and workload, the group and
    uids of the configuration matching the pods', the kustomization complete, check-config."""
    k = DOCKER / "k8s/node"
    check_kustomization(k)
    data = load_yaml(k / "configmap.yaml")["data"]
    config = tomllib.loads(data["config.toml"])
    socket = config["server"]["unix_socket"]
    socket_dir = str(pathlib.PurePosixPath(socket["path"]).parent)
    check(config["server"].get("listen") == "off", "node: the TCP API must be off (pods use the socket)")
    check(config["server"].get("admin_listen") == f"0.0.0.0:{ADMIN_PORT}", "node: admin_listen must be 0.0.0.0 for probes")
    daemon = load_yaml(k / "daemonset.yaml")["spec"]["template"]["spec"]
    broker = next(c for c in daemon["containers"] if c["name"] == "credential-broker")
    host_paths = {v["name"]: v["hostPath"]["path"] for v in daemon["volumes"] if "hostPath" in v}
    mount = next((m for m in broker["volumeMounts"] if m["mountPath"] == socket_dir), None)
    check(mount is not None and host_paths.get(mount["name"]) == socket_dir,
          f"node: the broker must mount hostPath {socket_dir} at {socket_dir}")
    init = daemon.get("initContainers", [{}])[0]
    uid = broker["securityContext"]["runAsUser"]
    check(f"chown {uid}:{socket['group']} {socket_dir}" in " ".join(init.get("command", [])),
          f"node: the init container must give {socket_dir} to {uid}:{socket['group']}")
    workload = load_yaml(k / "workload.yaml")["spec"]["template"]["spec"]
    w_paths = {v["name"]: v["hostPath"]["path"] for v in workload["volumes"] if "hostPath" in v}
    mounts = [m for c in workload["containers"] for m in c.get("volumeMounts", [])]
    check(any(m["mountPath"] == socket_dir and w_paths.get(m["name"]) == socket_dir for m in mounts),
          f"node: the workload must mount hostPath {socket_dir} at {socket_dir}")
    context = workload["securityContext"]
    check(socket["group"] in context.get("supplementalGroups", []), "node: the workload must join the socket's group")
    uids = {u: name for name, c in config.get("clients", {}).items() for u in c.get("unix_uids", [])}
    check(context.get("runAsUser") in uids, f"node: the workload's uid {context.get('runAsUser')} is no client's unix_uids")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = pathlib.Path(tmp) / "run"
        run_dir.mkdir(mode=0o750)
        embedded = pathlib.Path(tmp) / "config.toml"
        embedded.write_text(data["config.toml"].replace(socket_dir, str(run_dir)))
        run_check_config(binary, embedded, {}, "docker/k8s/node/configmap.yaml data.config.toml")
    finish("k8s node-level: socket hostPath, group and uids, kustomization, check-config")


def overlays(out_dir: str) -> None:
    """Renders each overlay with kubectl's kustomize; checks the broker's image is the overlay's;
    writes the objects kubernetes-validate knows (not the PodMonitor CRD) to OUT/NAME.yaml."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        errors.append("kubectl (with its built-in kustomize) is missing: it renders docker/k8s-overlays")
        return finish("kustomize overlays")
    for overlay in sorted((DOCKER / "k8s-overlays").iterdir()):
        kustomization = load_yaml(overlay / "kustomization.yaml")
        result = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            errors.append(f"{overlay.name}: kubectl kustomize failed: {result.stderr.strip()}")
            continue
        objects = [o for o in yaml.safe_load_all(result.stdout) if o]
        image = kustomization["images"][0]
        wanted = f"{image['newName']}:{image['newTag']}"
        brokers = [c["image"] for o in objects if o["kind"] in ("Deployment", "DaemonSet")
                   for c in o["spec"]["template"]["spec"].get("initContainers", []) + o["spec"]["template"]["spec"]["containers"]
                   if c["name"] == "credential-broker"]
        check(brokers != [] and all(i == wanted for i in brokers), f"{overlay.name}: broker images {brokers}, not {wanted}")
        known = [o for o in objects if o["kind"] != "PodMonitor"]
        pathlib.Path(out_dir, f"{overlay.name}.yaml").write_text(yaml.safe_dump_all(known))
    finish("kustomize overlays: rendered, broker image set")


# --- Grafana -----------------------------------------------------------------------------------


def dashboard(rules_out: str) -> None:
    path = DOCKER / "grafana/credential-broker.json"
    try:
        board = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        errors.append(f"not valid JSON: {e}")
        return finish("grafana dashboard")
    variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
    check(variables.get("DS_PROMETHEUS", {}).get("type") == "datasource", "needs a DS_PROMETHEUS datasource variable")
    check("label_values(" in json.dumps(variables.get("db", {}).get("query")), "needs a db variable from label_values(...)")
    check(isinstance(board.get("schemaVersion"), int) and board["schemaVersion"] >= 36, "schemaVersion missing or old")
    ids = [p["id"] for p in board["panels"]]
    check(len(ids) == len(set(ids)), "panel ids are not unique")
    rules = []
    for panel in board["panels"]:
        pos = panel.get("gridPos", {})
        check(pos.get("x", 0) + pos.get("w", 0) <= 24, f"panel {panel.get('title')}: wider than the grid")
        if panel["type"] == "row":
            continue
        check(panel.get("datasource", {}).get("uid") == "${DS_PROMETHEUS}", f"panel {panel['title']}: datasource is not ${{DS_PROMETHEUS}}")
        check(bool(panel.get("targets")), f"panel {panel['title']}: no queries")
        check(bool(panel.get("fieldConfig", {}).get("defaults", {}).get("unit")), f"panel {panel['title']}: no unit")
        for t in panel.get("targets", []):
            expr = t["expr"]
            for var, value in (("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "1h"), ("$db", ".*")):
                expr = expr.replace(var, value)
            check("$" not in expr, f"panel {panel['title']}: unknown variable in {t['expr']}")
            rules.append({"record": f"dashboard:panel_{panel['id']}_{t['refId']}", "expr": expr})
    pathlib.Path(rules_out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    finish(f"grafana dashboard: JSON, variables, {len(board['panels'])} panels, {len(rules)} queries")


# --- metric names ------------------------------------------------------------------------------


def metrics() -> None:
    # The names live in src/metrics/names.rs, the histogram registrations beside them.
    source = "\n".join(p.read_text() for p in sorted((ROOT / "src/metrics").glob("*.rs")))
    consts = dict(re.findall(r'pub const ([A-Z_]+): &str\s*=\s*"(credential_broker_[a-z_]+)"', source))
    known = set(consts.values())
    histograms = {consts[c] for c in re.findall(r"(?:histograms\(|HistogramOpts::new\()\s*([A-Z_]+)", source)}
    check(len(known) >= 10, "found too few metric names in src/metrics/: has its layout changed?")
    check(bool(histograms), "found no histogram in src/metrics/: has its layout changed?")
    files = [DOCKER / "grafana/credential-broker.json", DOCKER / "prometheus/alerts.yml", DOCKER / "prometheus/alerts_test.yml"]
    used: dict[str, set[str]] = {}
    for f in files:
        for name in re.findall(r"credential_broker_[a-z_]+", f.read_text()):
            used.setdefault(name, set()).add(f.relative_to(ROOT).as_posix())
    for name, where in sorted(used.items()):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in known or (base != name and base in histograms):
            continue
        errors.append(f"{name} (in {', '.join(sorted(where))}) is not a metric in src/metrics/")
    unused = sorted(known - {re.sub(r"_(bucket|sum|count)$", "", n) for n in used})
    if unused:
        print(f"  note exported but on no dashboard or alert: {', '.join(unused)}")
    finish(f"metric names ({len(used)} used)")


# --- check-config ------------------------------------------------------------------------------


def run_check_config(binary: str, config: pathlib.Path, env: dict[str, str], what: str) -> None:
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    result = subprocess.run(
        [binary, "--config", str(config), "check-config"],
        env=clean, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    if result.returncode != 0:
        errors.append(f"{what}: check-config exited {result.returncode}: {result.stderr.strip() or result.stdout.strip()}")
    else:
        print(f"  ok   check-config {what}")


def configs(binary: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = pathlib.Path(tmp)
        token = tmp_path / "broker-token"
        token.write_text("deploy-check-token-0123456789\n")
        # The file configs name /run/secrets/broker-token, which exists only in the pod; the
        # environment override points the same key at a stand-in (the file itself is unchanged).
        file_env = {"CREDENTIAL_BROKER_AUTH__TOKEN_FILE": str(token)}
        run_check_config(binary, DOCKER / "config.toml", file_env, "docker/config.toml")

        embedded = tmp_path / "configmap-config.toml"
        embedded.write_text(load_yaml(DOCKER / "k8s/configmap.yaml")["data"]["config.toml"])
        run_check_config(binary, embedded, file_env, "docker/k8s/configmap.yaml data.config.toml")

        # ECS: the broker container's environment as the task definition sets it, with a stand-in
        # value for each of its `secrets`; CREDENTIAL_BROKER_CONFIG names the image path, so the
        # repository's copy is passed with --config instead.
        task = json.loads((DOCKER / "ecs/task-definition.json").read_text())
        broker = next(c for c in task["containerDefinitions"] if c["name"] == "credential-broker")
        env = {e["name"]: e["value"] for e in broker.get("environment", []) if e["name"] != "CREDENTIAL_BROKER_CONFIG"}
        env.update({s["name"]: "deploy-check-token-0123456789" for s in broker.get("secrets", [])})
        run_check_config(binary, DOCKER / "ecs/config.toml", env, "docker/ecs/config.toml with the task definition's environment")
    finish("check-config")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"ecs": ecs, "k8s": k8s, "k8s_pgbouncer": k8s_pgbouncer, "k8s_node": k8s_node, "overlays": overlays, "ecs_pgbouncer": ecs_pgbouncer, "dashboard": dashboard, "metrics": metrics, "configs": configs}[command](*args)
