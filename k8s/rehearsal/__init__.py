"""The kubelet rehearsal: play the rendered Kubernetes manifests on this machine.

`python -m k8s.rehearsal --overlay cpu` renders an overlay with `kubectl kustomize`, and plays
each Deployment's pod the way a kubelet would, with the project's venv standing in for the
image: volumes become temp dirs, env and args come from the manifest ($(VAR) expanded as
Kubernetes does), container ports move to free host ports, init containers run in order, the
probes run as declared, liveness failures restart the container, and stopping runs preStop,
SIGTERM and SIGKILL after the grace period. Real inference then goes through the Service's port.

Modules: `expand` (env and $(VAR)), `remap` (paths, ports, Service names), `image` (what the
image holds, read from k8s/images/Dockerfile), `volumes` (temp dirs, test Secrets), `probes`
(probe execution and the kubelet's threshold state machine), `container` (process control),
`kubelet` (pods), `scenario` (the checks per overlay), `events` (log and summary).
"""
