package pooler

import (
	"bytes"
	"errors"
	"testing"
)

// A principal_query result larger than maxQueryRowsBytes is refused with
// errQueryTooLarge, nothing of it kept, and the connection stays usable:
// the rest of the result, up to ReadyForQuery, is read and dropped.
func TestQueryRowsBounded(t *testing.T) {
	value := bytes.Repeat([]byte("x"), 64<<10)
	row := fuzzMessage('D', []byte{0, 1}, be32(len(value)), value)
	var data []byte
	for n := 0; n <= maxQueryRowsBytes; n += len(row) - 5 {
		data = append(data, row...)
	}
	data = append(data, fuzzMessage('C', cstr("SELECT n"))...)
	data = append(data, readyFor('I')...)
	// What a second query on the same connection gets.
	data = append(data, row...)
	data = append(data, readyFor('I')...)
	sc := hostilePipe(t, data)
	rows, err := sc.queryRows("SELECT role, oid, type FROM principals")
	if !errors.Is(err, errQueryTooLarge) || rows != nil {
		t.Fatalf("oversized result: %d rows, err %v; want errQueryTooLarge", len(rows), err)
	}
	rows, err = sc.queryRows("SELECT 1")
	if err != nil || len(rows) != 1 {
		t.Fatalf("the next query on the connection: %d rows, err %v", len(rows), err)
	}
}
