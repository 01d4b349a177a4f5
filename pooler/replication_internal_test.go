package pooler

import (
	"testing"
)

// TestParseReplication: the replication startup parameter is read as
// PostgreSQL reads it (parse_bool, or exactly "database").
func TestParseReplication(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want replKind
		ok   bool
	}{
		{"database", replLogical, true},
		{"true", replPhysical, true}, {"t", replPhysical, true}, {"TRU", replPhysical, true},
		{"yes", replPhysical, true}, {"Y", replPhysical, true}, {"on", replPhysical, true}, {"ON", replPhysical, true},
		{"1", replPhysical, true},
		{"false", replNone, true}, {"F", replNone, true}, {"no", replNone, true}, {"n", replNone, true},
		{"off", replNone, true}, {"of", replNone, true}, {"0", replNone, true},
		{"", replNone, false}, {"o", replNone, false}, {"Database", replNone, false}, {"data", replNone, false},
		{"truex", replNone, false}, {"yess", replNone, false}, {"onn", replNone, false}, {"10", replNone, false},
		{"00", replNone, false}, {" true", replNone, false}, {"2", replNone, false},
	} {
		got, ok := parseReplication(tc.v)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseReplication(%q) = %v, %v; want %v, %v", tc.v, got, ok, tc.want, tc.ok)
		}
	}
}

// TestMsgWalk: message boundaries are followed across any split of the
// stream.
func TestMsgWalk(t *testing.T) {
	var stream []byte
	stream = appendReadyForQuery(stream, 'I')
	stream = append(stream, 'd', 0, 0, 0, 4+3, 'a', 'b', 'c')
	stream = append(stream, 'c', 0, 0, 0, 4)
	stream = appendErrorResponse(stream, 'E', "FATAL", "57P01", "bye")
	ends := map[int]byte{6: 'Z', 14: 'd', 19: 'c', len(stream): 'E'}
	for split := 1; split <= len(stream); split++ {
		var w msgWalk
		for i := 0; i < len(stream); i += split {
			j := min(i+split, len(stream))
			w.walk(stream[i:j])
			last, end := ends[j]
			if w.boundary() != end {
				t.Fatalf("split %d: boundary at %d is %v", split, j, w.boundary())
			}
			if end && w.last != last {
				t.Fatalf("split %d: last %q at %d, want %q", split, w.last, j, last)
			}
		}
	}
}
