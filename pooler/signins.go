package pooler

import "sync"

// signinRing keeps the last sign-in events for SHOW SIGNINS. Safe for
// concurrent use.
type signinRing struct {
	mu   sync.Mutex
	buf  []SignInEvent
	next int
	full bool
}

// signinRingSize is how many events SHOW SIGNINS can show.
const signinRingSize = 200

func (r *signinRing) add(ev SignInEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.buf == nil {
		r.buf = make([]SignInEvent, signinRingSize)
	}
	r.buf[r.next] = ev
	r.next = (r.next + 1) % len(r.buf)
	if r.next == 0 {
		r.full = true
	}
}

// recent returns the events, newest first.
func (r *signinRing) recent() []SignInEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.next
	if r.full {
		n = len(r.buf)
	}
	out := make([]SignInEvent, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, r.buf[(r.next-i+len(r.buf))%len(r.buf)])
	}
	return out
}
