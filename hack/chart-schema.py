#!/usr/bin/env python3
"""Writes charts/open-autoglm/values.schema.json, the JSON schema `helm` checks values against.

    hack/chart-schema.py           write the schema
    hack/chart-schema.py --check   exit 1 when the committed schema differs (make manifests-check)

Every key of values.yaml is declared here with its type and bounds; unknown keys are refused
(additionalProperties: false), so a misspelt value fails `helm install` with the key's path
instead of being ignored. Free-form Kubernetes fragments (affinity, tolerations, resources,
security contexts) are declared as objects and left to the API server's own validation.
"""
import json
import pathlib
import sys
S=lambda **k: dict(type="string", **k)
B=lambda d: dict(type="boolean", description=d)
I=lambda d, **k: dict(type="integer", description=d, **k)
def O(props, d=None, required=None, extra=False):
    o={"type":"object","additionalProperties":extra,"properties":props}
    if d: o["description"]=d
    if required: o["required"]=required
    return o
free=lambda d: {"type":"object","description":d}
arr=lambda d, items=None: dict(type="array", description=d, **({"items":items} if items else {}))
port=lambda d: I(d, minimum=1, maximum=65535)
k8sname={"type":"string","pattern":"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?$","maxLength":63}
image=O({"repository":S(description="Image repository, without registry and tag.", minLength=1),
         "tag":S(description="Overrides image.tag for this component (empty: image.tag, then appVersion).")},
        required=["repository"])
probe=O({"initialDelaySeconds":I("Seconds before the first probe.",minimum=0),
         "periodSeconds":I("Seconds between probes.",minimum=1),
         "timeoutSeconds":I("Seconds before a probe times out.",minimum=1),
         "failureThreshold":I("Failures in a row before acting.",minimum=1)})
sa=O({"create":B("Create the service account."),
      "name":dict(k8sname, description="Name (empty: derived from the release)."),
      "annotations":free("Annotations, e.g. for cloud workload identity.")})
resources=O({"requests":free("Requests (cpu, memory)."),"limits":free("Limits (cpu, memory).")},"Container resources.")
gpus=arr("Simulated GPU groups, in index order.",O({
          "product":S(description="Product name, as NVML reports it.",minLength=1),
          "memoryMiB":I("Memory of one GPU in MiB.",minimum=1),
          "count":I("GPUs of this kind (default 1).",minimum=1),
          "computeCapability":S(description="CUDA compute capability, e.g. 8.0.",pattern="^[0-9]+[.][0-9]+$")},
          required=["product","memoryMiB"]))
common_pod={
  "podAnnotations":free("Extra pod annotations."),
  "podLabels":free("Extra pod labels."),
  "nodeSelector":free("Node selector."),
  "tolerations":arr("Tolerations.",{"type":"object"}),
  "affinity":free("Affinity."),
  "priorityClassName":dict(k8sname, description="Priority class (empty: the chart's when priorityClass.create)."),
  "extraArgs":arr("Extra command-line arguments.",{"type":"string"}),
  "extraEnv":arr("Extra environment variables (EnvVar objects).",{"type":"object","required":["name"]}),
  "resources":resources,
  "livenessProbe":probe,"readinessProbe":probe,
  "serviceAccount":sa,
}
schema={
 "$schema":"https://json-schema.org/draft-07/schema#",
 "title":"open-autoglm chart values",
 "type":"object","additionalProperties":False,
 "properties":{
  "global":free("Helm global values (unused by this chart)."),
  "nameOverride":S(description="Override the chart name in resource names."),
  "fullnameOverride":S(description="Override the full resource-name prefix."),
  "image":O({"registry":S(description="Registry prefix for every image."),
             "tag":S(description="Tag for every image (empty: appVersion)."),
             "pullPolicy":{"type":"string","enum":["Always","IfNotPresent","Never"]}},"Image defaults."),
  "imagePullSecrets":arr("Image pull secrets.",O({"name":S(minLength=1)},required=["name"])),
  "logging":O({"level":S(description="tracing env-filter directive.",minLength=1),
               "format":{"type":"string","enum":["json","plain"],"description":"Log format."}},"Logs."),
  "controller":O(dict(common_pod, **{
     "replicas":I("Controller replicas (leader-elected).",minimum=1),
     "image":image,
     "leaderElection":O({"enabled":B("Elect a leader through a Lease."),
                         "leaseName":dict(k8sname, description="Lease name."),
                         "leaseDurationSeconds":I("Lease validity in seconds.",minimum=2),
                         "renewGraceSeconds":I("Seconds before expiry at which the leader renews.",minimum=1)}),
     "maxHeartbeatAgeSeconds":I("GpuNode heartbeat age (s) after which a node's GPUs are unavailable; 0 disables.",minimum=0),
     "nodeLostAfterSeconds":I("Seconds NotReady before replicas move (1 to 31536000, one year; the controller's --node-lost-after-s range).",minimum=1,maximum=31_536_000),
     "watchNamespace":dict(k8sname, description="Only this namespace's InferenceJobs (empty: all)."),
     "gpuNodeSelector":S(description="Label selector of the Nodes this install places on (empty: all)."),
     "adminPort":port("Admin port (/livez, /readyz, /metrics)."),
     "podDisruptionBudget":O({"enabled":B("Render a PDB when replicas > 1."),
                              "minAvailable":{"type":["integer","string"],"description":"Replicas that stay up (number or percentage)."}}),
     "topologySpreadConstraints":arr("Topology spread constraints.",{"type":"object"}),
  }),"The controller Deployment."),
  "nodeAgent":O(dict(common_pod, **{
     "enabled":B("Deploy the node agent DaemonSet."),
     "image":image,
     "inventory":{"type":"string","enum":["nvml","simulated"],"description":"GPU inventory source."},
     "simulated":O({"gpus":gpus,
                    "nodes":{"type":"object","description":"GPUs of particular nodes, by Node name.",
                             "additionalProperties":O({"gpus":gpus},required=["gpus"])}}),
     "publishIntervalSeconds":I("Seconds between GpuNode publications.",minimum=1),
     "pollIntervalSeconds":I("Seconds between inventory readings.",minimum=1),
     "healthRecoverySeconds":I("Seconds without XID/ECC errors before a GPU is healthy again.",minimum=0),
     "adminPort":port("Admin port (/livez, /readyz, /metrics)."),
     "devicePlugin":O({"enabled":B("Serve the kubelet device plugin."),
                       "hostPath":S(description="The kubelet's device-plugins directory on the host.",pattern="^/")}),
     "nvml":O({"runtimeClassName":dict(k8sname, description="RuntimeClass that injects the GPUs and NVML."),
               "hostLibrary":O({"enabled":B("Mount the host's libnvidia-ml.so.1."),
                                "path":S(description="Path of libnvidia-ml.so.1 on the host.",pattern="^/")})}),
     "updateStrategy":free("DaemonSet update strategy."),
  }),"The node agent DaemonSet."),
  "workers":O({"serviceAccount":sa,
               "namespaces":arr("Further namespaces where InferenceJobs run.",dict(k8sname, minLength=1)),
               "image":O({"override":B("Force this image on every replica pod."),
                          "repository":S(description="Image repository, without registry and tag.", minLength=1),
                          "tag":S(description="Overrides image.tag (empty: image.tag, then appVersion).")},required=["repository"])},"Replica (worker) pods."),
  "rbac":O({"create":B("Create RBAC objects.")}),
  "admissionPolicies":O({"enabled":B("Create ValidatingAdmissionPolicies (own node, own pod).")}),
  "metrics":O({"service":O({"enabled":B("Services in front of the admin ports.")}),
               "serviceMonitor":O({"enabled":B("Create ServiceMonitors when the Prometheus operator is present."),
                                   "interval":S(pattern="^[0-9]+(ms|s|m|h)$",description="Scrape interval."),
                                   "scrapeTimeout":S(pattern="^[0-9]+(ms|s|m|h)$",description="Scrape timeout."),
                                   "labels":free("Extra labels.")})}),
  "networkPolicy":O({"enabled":B("Create NetworkPolicies."),
                     "metricsFrom":arr("Peers allowed to reach admin ports.",{"type":"object"}),
                     "apiServer":O({"cidrs":arr("API server CIDRs.",{"type":"string","pattern":"^[0-9a-fA-F:.]+/[0-9]{1,3}$"}),
                                    "ports":arr("API server ports.",port("Port."))}),
                     "workerEgress":arr("Egress rules for worker pods.",{"type":"object"})}),
  "priorityClass":O({"create":B("Create a PriorityClass."),
                     "name":dict(k8sname, description="Name."),
                     "value":I("Priority value.",minimum=0,maximum=1000000000)}),
  "podSecurityContext":free("Pod security context (controller)."),
  "containerSecurityContext":free("Container security context (every container)."),
 }}
text = json.dumps(schema, indent=2) + "\n"
path = pathlib.Path(__file__).resolve().parent.parent / "charts/open-autoglm/values.schema.json"
if sys.argv[1:] == ["--check"]:
    if not path.exists() or path.read_text() != text:
        sys.exit("chart-schema: charts/open-autoglm/values.schema.json is out of date; run 'make manifests'")
    print("chart-schema: values.schema.json is up to date", file=sys.stderr)
elif sys.argv[1:]:
    sys.exit("usage: hack/chart-schema.py [--check]")
else:
    path.write_text(text)
    print(f"chart-schema: wrote {path.name}", file=sys.stderr)
