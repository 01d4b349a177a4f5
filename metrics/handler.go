package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler returns the metrics listener's handler. It serves /metrics from
// reg, /healthz (200 whenever the process can answer) and /readyz (200 when
// ready reports true, else 503). ready is called on every /readyz request
// and must be safe for concurrent use; a nil ready counts as always ready.
// Other paths get 404. pprof is deliberately not mounted here.
func Handler(reg prometheus.Gatherer, ready func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeStatus(w, http.StatusOK)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready == nil || ready() {
			writeStatus(w, http.StatusOK)
			return
		}
		writeStatus(w, http.StatusServiceUnavailable)
	})
	return mux
}

// writeStatus writes code with its status text as a plain-text body.
func writeStatus(w http.ResponseWriter, code int) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(http.StatusText(code) + "\n"))
}
