package pooler

import (
	"runtime"
	"testing"
	"time"
)

// Clients that expect the same values share one set; a changed value
// gives another set and leaves the shared one alone; a set nobody holds
// leaves the intern table.
func TestParamSetsInterned(t *testing.T) {
	var sets paramSets
	a := sets.intern(map[string]string{"client_encoding": "UTF8", "datestyle": "ISO, MDY"})
	b := sets.intern(map[string]string{"datestyle": "ISO, MDY", "client_encoding": "UTF8"})
	if a != b {
		t.Fatal("equal parameter values were not shared")
	}
	c := sets.with(a, map[string]string{"datestyle": "German"})
	if c == a || a.m["datestyle"] != "ISO, MDY" || c.m["datestyle"] != "German" || c.m["client_encoding"] != "UTF8" {
		t.Fatalf("copy on write: shared %v, changed %v", a.m, c.m)
	}
	if d := sets.with(c, map[string]string{"datestyle": "ISO, MDY"}); d != a {
		t.Fatal("changing a value back did not find the shared set")
	}
	if sets.size() != 2 {
		t.Fatalf("intern table has %d entries, want 2", sets.size())
	}
	runtime.KeepAlive(a)
	runtime.KeepAlive(c)
	a, b, c = nil, nil, nil
	deadline := time.Now().Add(10 * time.Second)
	for sets.size() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("intern table still has %d entries after the sets were dropped", sets.size())
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
}
