//go:build !linux

package pooler

import "errors"

var errNoWatcher = errors.New("no socket watcher on this platform")

// newWatcher: idle clients are parked on Linux only; elsewhere each keeps
// its goroutine.
func newWatcher() (watcher, error) { return nil, errNoWatcher }
