package pooler

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Pausing the pooler, as the console's PAUSE, SUSPEND, KILL and RESUME do.
//
// PAUSE (every database) and SUSPEND are the pooler-wide modes, one at a
// time, as in PgBouncer; PAUSE db and KILL [db] pause databases one by one.
// While a database is paused no server is handed out for it: clients that
// need one wait (query_wait_timeout still applies).
//
// SUSPEND is PgBouncer's "flush socket buffers and stop reading": pgwarden
// writes to sockets without buffering, so there is nothing to flush, and
// "stop reading" is a gate that every client session passes before it reads
// its next request. A request already read goes on to the server and its
// answer is delivered; then the session stops until RESUME. New client
// connections are accepted by the kernel but their startup packet is not
// answered until RESUME, except for the admin console. Servers are left
// alone.
type pauseState struct {
	// suspended is the gate's fast path, read by every session before it
	// reads from its client.
	suspended atomic.Bool

	mu struct {
		sync.Mutex
		mode pauseMode
		// dbs are the databases paused one by one (PAUSE db, KILL).
		dbs map[string]bool
		// resumed is closed (and replaced) whenever a pause is lifted.
		resumed chan struct{}
		// suspender is the console session that ran SUSPEND; the pooler
		// resumes when it disconnects.
		suspender *adminSession
	}
}

type pauseMode int

const (
	pauseNone pauseMode = iota
	pauseAll
	pauseSuspend
)

func (ps *pauseState) init() {
	ps.mu.dbs = map[string]bool{}
	ps.mu.resumed = make(chan struct{})
}

// blockedFor returns a channel closed at the next RESUME when database db
// may not be given servers now, or nil when it may.
func (ps *pauseState) blockedFor(db string) chan struct{} {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.mu.mode != pauseNone || ps.mu.dbs[db] {
		return ps.mu.resumed
	}
	return nil
}

// wakeLocked lets every waiter re-check.
func (ps *pauseState) wakeLocked() {
	close(ps.mu.resumed)
	ps.mu.resumed = make(chan struct{})
}

// mode reports the pooler-wide mode (SHOW STATE).
func (ps *pauseState) mode() pauseMode {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.mu.mode
}

// dbPaused reports whether db was paused by PAUSE db or KILL (SHOW
// DATABASES' paused column; a pooler-wide PAUSE does not set it, as in
// PgBouncer).
func (ps *pauseState) dbPaused(db string) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.mu.dbs[db]
}

// waitUnsuspended blocks while the pooler is suspended, until RESUME or
// until stop is closed (the client was killed or the pooler shuts down).
func (ps *pauseState) waitUnsuspended(stop1, stop2 <-chan struct{}) bool {
	for ps.suspended.Load() {
		ps.mu.Lock()
		ch := ps.mu.resumed
		on := ps.mu.mode == pauseSuspend
		ps.mu.Unlock()
		if !on {
			return true
		}
		select {
		case <-ch:
		case <-stop1:
			return false
		case <-stop2:
			return false
		}
	}
	return true
}

// Errors of the pause commands, PgBouncer's texts.
const (
	errAlreadyPaused     = "already suspended/paused"
	errNotPaused         = "pooler is not paused/suspended"
	errPausedDatabases   = "cannot suspend with paused databases"
	errShuttingDownAdmin = "pooler is shutting down"
)

// startPause sets the pooler-wide PAUSE (db == "") or pauses db; it fails
// when the pooler is already paused or suspended.
func (ps *poolSet) startPause(db string) string {
	ps.pause.mu.Lock()
	defer ps.pause.mu.Unlock()
	if ps.pause.mu.mode != pauseNone {
		return errAlreadyPaused
	}
	if db == "" {
		ps.pause.mu.mode = pauseAll
	} else {
		ps.pause.mu.dbs[db] = true
	}
	return ""
}

// drain waits until no server of db (all databases when "") is lent to a
// client, then closes the idle ones: the second half of PAUSE.
func (ps *poolSet) drain(ctx context.Context, db string) error {
	for _, p := range ps.list() {
		if db != "" && p.key.db != db {
			continue
		}
		for {
			busy := int32(0)
			for _, pp := range p.puddles() {
				busy += pp.Stat().AcquiredResources()
			}
			if busy == 0 {
				for _, pp := range p.puddles() {
					pp.Reset()
				}
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// resume lifts PAUSE, SUSPEND and KILL (db == "": all of them) or the pause
// of one database; it returns PgBouncer's error text when there was nothing
// to resume.
func (ps *poolSet) resume(db string) string {
	ps.pause.mu.Lock()
	defer ps.pause.mu.Unlock()
	if db == "" {
		// Everything: the pooler-wide mode and the databases paused
		// one by one (PgBouncer leaves the latter to RESUME db, so that
		// after a KILL without a database a plain RESUME fails there).
		if ps.pause.mu.mode == pauseNone && len(ps.pause.mu.dbs) == 0 {
			return errNotPaused
		}
		clear(ps.pause.mu.dbs)
		ps.pause.mu.mode = pauseNone
		ps.pause.mu.suspender = nil
		ps.pause.suspended.Store(false)
		ps.pause.wakeLocked()
		ps.kickQueues()
		return ""
	}
	if !ps.pause.mu.dbs[db] {
		return "database " + db + " is not paused"
	}
	delete(ps.pause.mu.dbs, db)
	ps.pause.wakeLocked()
	ps.kickQueues()
	return ""
}

// suspend starts SUSPEND on behalf of console session a.
func (ps *poolSet) suspend(a *adminSession) string {
	ps.pause.mu.Lock()
	defer ps.pause.mu.Unlock()
	if ps.pause.mu.mode != pauseNone {
		return errAlreadyPaused
	}
	if len(ps.pause.mu.dbs) > 0 {
		return errPausedDatabases
	}
	ps.pause.mu.mode = pauseSuspend
	ps.pause.mu.suspender = a
	ps.pause.suspended.Store(true)
	return ""
}

// consoleGone resumes a SUSPEND whose console session has ended, as
// PgBouncer does.
func (ps *poolSet) consoleGone(a *adminSession) bool {
	ps.pause.mu.Lock()
	mine := ps.pause.mu.mode == pauseSuspend && ps.pause.mu.suspender == a
	ps.pause.mu.Unlock()
	if mine {
		ps.resume("")
	}
	return mine
}

// kill pauses db (every database when "") and drops its clients, with
// FATAL "database removed" as PgBouncer sends, and its server connections:
// idle ones now, busy ones as their clients go (at once: their sockets are
// closed).
func (ps *poolSet) kill(db string) string {
	ps.pause.mu.Lock()
	if ps.pause.mu.mode != pauseNone {
		ps.pause.mu.Unlock()
		return errAlreadyPaused
	}
	pools := ps.list()
	if db != "" {
		ps.pause.mu.dbs[db] = true
	} else {
		for _, p := range pools {
			ps.pause.mu.dbs[p.key.db] = true
		}
	}
	ps.pause.mu.Unlock()
	for _, p := range pools {
		if db != "" && p.key.db != db {
			continue
		}
		// Clients first, so that replication clients, which reconnect
		// closes too, are told the same as the others.
		ps.srv.killPoolClients(p, newError(codeDatabaseRemoved, ""))
		p.reconnect()
	}
	return ""
}
