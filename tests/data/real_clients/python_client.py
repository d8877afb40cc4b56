"""The official Python client (`kubernetes`) against the sandbox: exec with stdin, a watch,
and a 404. Run by tests/real_clients.rs as `python python_client.py KUBECONFIG NAMESPACE POD`;
prints one JSON line per scenario, which the test checks.
"""

import json
import sys
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

kubeconfig, namespace, pod = sys.argv[1:4]
config.load_kube_config(config_file=kubeconfig)
core = client.CoreV1Api()


def report(scenario, **fields):
    print(json.dumps({"scenario": scenario, **fields}), flush=True)


# Exec with stdin: a str is sent as a TEXT WebSocket frame, as this client does.
session = stream(
    core.connect_get_namespaced_pod_exec,
    pod,
    namespace,
    command=["sh", "-c", "read line; echo got:$line"],
    stdin=True,
    stdout=True,
    stderr=True,
    tty=False,
    _preload_content=False,
)
session.write_stdin("hello from python\n")
stdout = ""
# The command answers once it has its line; if the line never arrives, give up after a
# minute rather than hang (the test then fails on the output).
deadline = time.monotonic() + 60
while session.is_open() and "\n" not in stdout and time.monotonic() < deadline:
    session.update(timeout=5)
    stdout += session.read_stdout()
session.close()
report("exec", stdout=stdout)

# A watch from the list's version sees an object created after the list.
listed = core.list_namespaced_config_map(namespace)
core.create_namespaced_config_map(
    namespace,
    client.V1ConfigMap(metadata=client.V1ObjectMeta(name="watched"), data={"a": "1"}),
)
seen = None
events = watch.Watch()
for event in events.stream(
    core.list_namespaced_config_map,
    namespace,
    resource_version=listed.metadata.resource_version,
    timeout_seconds=60,
):
    if event["object"].metadata.name == "watched":
        seen = {"type": event["type"], "data": event["object"].data}
        events.stop()
report("watch", event=seen)

# An error is a Status: its reason is in the body.
try:
    core.read_namespaced_config_map("missing", namespace)
    report("missing", status=None)
except ApiException as error:
    report("missing", status=error.status, reason=json.loads(error.body)["reason"])
