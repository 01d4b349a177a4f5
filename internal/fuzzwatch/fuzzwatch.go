// Package fuzzwatch turns a hung fuzz input into a crash. Go's fuzzing
// engine reports a worker that stops making progress only as a falling
// exec rate, never as a failure, and does not say which input is stuck; a
// worker that panics, though, has its input saved to testdata/fuzz as a
// failing case. pgwarden's fuzz targets that wait on sockets, files or
// timers arm a Watchdog per input.
package fuzzwatch

import (
	"fmt"
	"time"
)

// Limit is how long one fuzz input may run. It is far above what any
// target needs (milliseconds) so that a slow, shared machine does not make
// false reports.
const Limit = 30 * time.Second

// Watchdog panics, ending the process, if the returned stop function is not
// called within d (Limit when d is 0). what describes the input for the
// report.
//
//	f.Fuzz(func(t *testing.T, data []byte) {
//		defer fuzzwatch.Watchdog(0, "FuzzX")()
//		…
//	})
func Watchdog(d time.Duration, what string) (stop func()) {
	if d <= 0 {
		d = Limit
	}
	tm := time.AfterFunc(d, func() {
		panic(fmt.Sprintf("%s: one input ran for more than %s (hang)", what, d))
	})
	return func() { tm.Stop() }
}
