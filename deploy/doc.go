// Package deploy holds no code. Its tests check the deployment artifacts
// kept beside it: the container image (container/), the systemd units
// (systemd/) and the Prometheus alert rules (prometheus/). Each test skips,
// saying why, when the tool it needs (podman, systemd-analyze, promtool) is
// not installed. The Helm chart (helm/) is checked by the separate Go module
// in check/, which keeps Helm's and Kubernetes' modules out of the main
// go.mod.
package deploy
