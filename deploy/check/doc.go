// Package check holds the checks of the Helm chart in deploy/helm/pgwarden:
// helm lint, helm template with the default values and with each values
// file in the chart's ci/ directory, a strict decoding of every rendered
// manifest into the Kubernetes API types (an unknown or misspelt field
// fails), and a validation of the rendered pooler.yaml files by pgwarden's
// own config loader. Helm and the Kubernetes API types come in as Go
// modules, so no helm or kubectl binary is needed.
//
// It is a Go module of its own so that the main module's go.mod stays free
// of Helm's and Kubernetes' dependencies. Run it with
//
//	cd deploy/check && go test ./...
package check
