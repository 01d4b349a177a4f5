package pooler_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// simpleExec runs sql as a simple Query and returns its last command tag.
func simpleExec(t *testing.T, c *pgconn.PgConn, sql string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := c.Exec(ctx, sql).ReadAll()
	if err != nil {
		return "", err
	}
	return res[len(res)-1].CommandTag.String(), nil
}

// execStmt runs a prepared statement without parameters and returns its
// single text value.
func execStmt(t *testing.T, c *pgconn.PgConn, name string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := c.ExecPrepared(ctx, name, nil, nil, nil).Read()
	if res.Err != nil {
		return "", res.Err
	}
	if len(res.Rows) != 1 {
		return "", fmt.Errorf("%d rows", len(res.Rows))
	}
	return string(res.Rows[0][0]), nil
}

func prepare(t *testing.T, c *pgconn.PgConn, name, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Prepare(ctx, name, sql, nil); err != nil {
		t.Fatalf("prepare %s: %v", name, err)
	}
}

// TestDeallocateSQL: SQL DEALLOCATE of a statement the client prepared
// through the protocol behaves as in PostgreSQL, in transaction and
// statement mode: the client's statement goes (other clients' stay), the
// name can be prepared again with another text, and the answer is
// DEALLOCATE with the client's transaction state.
func TestDeallocateSQL(t *testing.T) {
	for _, mode := range []string{"transaction", "statement"} {
		t.Run(mode, func(t *testing.T) {
			in := startPooler(t, "auth_type = scram-sha-256\npool_mode = "+mode+"\ndefault_pool_size = 1")
			a := in.connect(t, "alice", "alice-pw", "app").PgConn()
			b := in.connect(t, "alice", "alice-pw", "app").PgConn()
			prepare(t, a, "s1", "SELECT 'one'::text")
			prepare(t, b, "s1", "SELECT 'one'::text") // the same server statement
			for _, q := range []string{"DEALLOCATE s1", "deallocate prepare S1 ;", "  DeAllocate\n\"s1\";  "} {
				tag, err := simpleExec(t, a, q)
				if err != nil || tag != "DEALLOCATE" || a.TxStatus() != 'I' {
					t.Fatalf("%q: tag %q, status %c, %v", q, tag, a.TxStatus(), err)
				}
				if _, err := execStmt(t, a, "s1"); pgCode(err) != "26000" {
					t.Fatalf("s1 after %q: %v", q, err)
				}
				if v, err := execStmt(t, b, "s1"); err != nil || v != "one" {
					t.Fatalf("the other client's s1 after %q: %q, %v", q, v, err)
				}
				prepare(t, a, "s1", "SELECT 'one'::text")
			}
			// The name is free for another text.
			if _, err := simpleExec(t, a, "DEALLOCATE s1"); err != nil {
				t.Fatal(err)
			}
			prepare(t, a, "s1", "SELECT 'two'::text")
			if v, err := execStmt(t, a, "s1"); err != nil || v != "two" {
				t.Fatalf("re-prepared s1: %q, %v", v, err)
			}

			// Quoted names keep their case; unquoted ones fold, as in
			// PostgreSQL.
			prepare(t, a, "Mixed", "SELECT 'm'::text")
			if _, err := simpleExec(t, a, "DEALLOCATE Mixed"); pgCode(err) != "26000" || pgMessage(err) != `prepared statement "mixed" does not exist` {
				t.Fatalf("DEALLOCATE Mixed: %v", err)
			}
			if tag, err := simpleExec(t, a, `DEALLOCATE "Mixed"`); err != nil || tag != "DEALLOCATE" {
				t.Fatalf(`DEALLOCATE "Mixed": %q %v`, tag, err)
			}

			// Unknown names, and anything but one DEALLOCATE, pass to the
			// server unchanged.
			if _, err := simpleExec(t, a, "DEALLOCATE nosuch"); pgCode(err) != "26000" || pgMessage(err) != `prepared statement "nosuch" does not exist` {
				t.Fatalf("DEALLOCATE nosuch: %v", err)
			}
			if _, err := simpleExec(t, a, "DEALLOCATE s1; SELECT 1"); pgCode(err) != "26000" {
				t.Fatalf("DEALLOCATE in a multi-statement query: %v", err)
			}
			if v, err := execStmt(t, a, "s1"); err != nil || v != "two" {
				t.Fatalf("s1 after a DEALLOCATE that did not run: %q, %v", v, err)
			}
			// pgwarden's own names are never reached.
			if _, err := simpleExec(t, a, "DEALLOCATE pgwarden_0123456789abcdef0123456789abcdef"); pgCode(err) != "26000" ||
				pgMessage(err) != `prepared statement "pgwarden_0123456789abcdef0123456789abcdef" does not exist` {
				t.Fatalf("DEALLOCATE of a pgwarden name: %v", err)
			}
			if v, err := execStmt(t, b, "s1"); err != nil || v != "one" {
				t.Fatalf("the other client's s1 at the end: %q, %v", v, err)
			}
			// DEALLOCATE ALL is PostgreSQL's, as before.
			if tag, err := simpleExec(t, a, "DEALLOCATE ALL"); err != nil || tag != "DEALLOCATE ALL" {
				t.Fatalf("DEALLOCATE ALL: %q, %v", tag, err)
			}
			if _, err := execStmt(t, a, "s1"); pgCode(err) != "26000" {
				t.Fatalf("s1 after DEALLOCATE ALL: %v", err)
			}
		})
	}
}

// TestDeallocateInTransaction: inside a transaction block DEALLOCATE
// answers with status T; in a failed block it fails with 25P02 and the
// statement stays, as in PostgreSQL.
func TestDeallocateInTransaction(t *testing.T) {
	in := startPooler(t, txPool2)
	ctx := context.Background()
	conn := in.connect(t, "alice", "alice-pw", "app")
	c := conn.PgConn()
	prepare(t, c, "s1", "SELECT 'one'::text")
	prepare(t, c, "s2", "SELECT 'two'::text")

	if _, err := simpleExec(t, c, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if tag, err := simpleExec(t, c, "DEALLOCATE s1"); err != nil || tag != "DEALLOCATE" || c.TxStatus() != 'T' {
		t.Fatalf("in a block: %q, status %c, %v", tag, c.TxStatus(), err)
	}
	prepare(t, c, "s1", "SELECT 'new'::text")
	if v, err := execStmt(t, c, "s1"); err != nil || v != "new" {
		t.Fatalf("s1 re-prepared in the block: %q %v", v, err)
	}
	if _, err := simpleExec(t, c, "COMMIT"); err != nil || c.TxStatus() != 'I' {
		t.Fatalf("COMMIT: %v", err)
	}

	if _, err := simpleExec(t, c, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := simpleExec(t, c, "SELECT 1/0"); pgCode(err) != "22012" {
		t.Fatal(err)
	}
	if _, err := simpleExec(t, c, "DEALLOCATE s2"); pgCode(err) != "25P02" || c.TxStatus() != 'E' {
		t.Fatalf("in a failed block: status %c, %v", c.TxStatus(), err)
	}
	if _, err := simpleExec(t, c, "ROLLBACK"); err != nil || c.TxStatus() != 'I' {
		t.Fatalf("ROLLBACK: %v", err)
	}
	if v, err := execStmt(t, c, "s2"); err != nil || v != "two" {
		t.Fatalf("s2 after the refused DEALLOCATE: %q %v", v, err)
	}

	// pgx's own use: Exec of DEALLOCATE in the simple protocol, then the
	// same name prepared again with another text.
	if _, err := conn.Prepare(ctx, "p", "SELECT 1::int"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "DEALLOCATE p", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Prepare(ctx, "p", "SELECT 2::int"); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, conn, "p"); n != 2 {
		t.Fatalf("p: %d", n)
	}
}
