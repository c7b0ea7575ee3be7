// Package deployments holds no code: the directory has claudeq's deployment
// files (compose, Kubernetes, Prometheus, Grafana; see README.md), and this
// package exists so that its tests, which check those files, are part of
// `go test ./...` and `go build ./...` stays quiet.
package deployments
