// Package deploy holds no code: its folder has the deployment files of
// hubd (deploy/systemd, deploy/kubernetes, deploy/grafana) and its tests
// check them against the hub itself: the probes, ports and grace period of
// the Kubernetes manifests against the configuration, the systemd unit
// with systemd-analyze, the Dockerfile's stages, and every query of the
// Grafana dashboard against the metrics the hub serves.
package deploy
