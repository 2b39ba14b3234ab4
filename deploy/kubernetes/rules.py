"""What the schemas cannot check in kmirror's rendered manifests: the promises
docs/install.md makes about them. Run by ./check on each rendered kustomization:

    rules.py NAME FILE

Prints one line per rule kept and exits 1, naming what broke, on the first that is not.
"""
import re
import sys

import yaml

# Fetchers and writers stayed under this RSS in the benchmark (bench/README.md):
# their memory request covers it.
MEASURED_MEMORY_BOUND_BYTES = 150 * 10**6
METRICS_PORT = 9464
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9, "": 1}


def quantity_bytes(text):
    match = re.fullmatch(r"(\d+)([KMG]i?|)", str(text))
    if not match:
        raise ValueError(f"memory quantity {text!r}")
    return int(match.group(1)) * UNITS[match.group(2)]


def duration_seconds(text):
    match = re.fullmatch(r"(\d+)(s|m)", text)
    if not match:
        raise ValueError(f"duration {text!r}")
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def selects(selector, labels):
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def main(name, path):
    with open(path) as file:
        documents = [document for document in yaml.safe_load_all(file) if document]
    by_kind = {}
    for document in documents:
        by_kind.setdefault(document["kind"], []).append(document)
    config_maps = {config["metadata"]["name"]: config.get("data", {}) for config in by_kind.get("ConfigMap", [])}
    failures = []

    def rule(holds, description):
        print(f"RULE {name}: {'ok' if holds else 'BROKEN'} {description}")
        if not holds:
            failures.append(description)

    deployments = by_kind.get("Deployment", [])
    rule({d["metadata"]["name"] for d in deployments} >= {"kmirror-coordinator", "kmirror-fetcher", "kmirror-writer"},
         "a Deployment per role")
    for deployment in deployments:
        deployment_name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]
        labels = pod["metadata"]["labels"]
        (container,) = pod["spec"]["containers"]
        environment = {}
        for source in container.get("envFrom", []):
            environment.update(config_maps.get(source["configMapRef"]["name"], {}))
        environment.update({variable["name"]: variable.get("value") for variable in container.get("env", [])})
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}

        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            action = container.get(probe, {}).get("httpGet", {})
            port = ports.get(action.get("port"), action.get("port"))
            rule(action.get("path") == path and port == METRICS_PORT,
                 f"{deployment_name}: {probe} on {path} at the metrics port {METRICS_PORT}")
        rule(environment.get("KMIRROR_METRICS_LISTEN", "").endswith(f":{METRICS_PORT}"),
             f"{deployment_name}: the metrics endpoint listens on {METRICS_PORT}")
        annotations = pod["metadata"].get("annotations", {})
        rule(annotations.get("prometheus.io/scrape") == "true"
             and annotations.get("prometheus.io/port") == str(METRICS_PORT),
             f"{deployment_name}: Prometheus scrapes the metrics port")

        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        shutdown_grace = duration_seconds(environment.get("KMIRROR_SHUTDOWN_GRACE", "20s"))
        rule(shutdown_grace < grace,
             f"{deployment_name}: the member's shutdown grace ({shutdown_grace}s) ends before the pod's ({grace}s)")

        resources = container.get("resources", {})
        request = resources.get("requests", {}).get("memory")
        limit = resources.get("limits", {}).get("memory")
        rule(request is not None and limit is not None and quantity_bytes(limit) >= quantity_bytes(request),
             f"{deployment_name}: memory requested and limited, limit >= request")
        if deployment_name in ("kmirror-fetcher", "kmirror-writer"):
            rule(request is not None and quantity_bytes(request) >= MEASURED_MEMORY_BOUND_BYTES,
                 f"{deployment_name}: the memory request covers the measured bound (150 MB)")
        if deployment_name == "kmirror-coordinator":
            rule(deployment["spec"].get("replicas", 1) >= 2, f"{deployment_name}: two coordinators")

        rule(any(selects(budget["spec"]["selector"], labels) for budget in by_kind.get("PodDisruptionBudget", [])),
             f"{deployment_name}: a PodDisruptionBudget covers its pods")
        rule(any(selects(policy["spec"]["podSelector"], labels)
                 and set(policy["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
                 and not policy["spec"].get("ingress") and not policy["spec"].get("egress")
                 for policy in by_kind.get("NetworkPolicy", [])),
             f"{deployment_name}: a NetworkPolicy denies what no other allows")

    if failures:
        print(f"error: {name} breaks {len(failures)} rule(s): {'; '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
