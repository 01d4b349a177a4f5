package authn_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// secretNames are the (lower-cased) names of values that hold secrets or
// proofs of them: comparing them with == or bytes.Equal takes a time that
// depends on how many leading bytes match, which an attacker can measure.
// They must be compared with crypto/subtle (ConstantTimeCompare, on equal
// lengths: digests of passwords, fixed-size keys).
var secretNames = []string{"password", "passwd", "secret", "proof", "storedkey", "serverkey", "clientkey",
	"signature", "nonce", "plain", "md5", "cancelkey", "token", "header"}

// TestSecretsComparedInConstantTime audits the sources of the packages that
// check credentials (authn, pooler, the binary): no ==, != or bytes.Equal
// (nor strings.EqualFold) between two values whose names say they hold a
// secret. Comparisons with a literal, nil or a length are not secret
// comparisons and are allowed, as are fields that only name a kind, and
// lines commented "not a credential check" (with the reason).
func TestSecretsComparedInConstantTime(t *testing.T) {
	var files []string
	for _, dir := range []string{".", "devidp", "../pooler", "../cmd/pgwarden"} {
		m, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range m {
			if !strings.HasSuffix(f, "_test.go") {
				files = append(files, f)
			}
		}
	}
	if len(files) < 20 {
		t.Fatalf("only %d files found", len(files))
	}
	fset := token.NewFileSet()
	for _, name := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		// A comparison on a line saying "not a credential check" (and
		// why) is exempt: e.g. a reload comparing old and new config.
		exempt := map[int]bool{}
		for _, cg := range f.Comments {
			if strings.Contains(cg.Text(), "not a credential check") {
				exempt[fset.Position(cg.End()).Line] = true
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if n != nil && exempt[fset.Position(n.Pos()).Line] {
				return true
			}
			switch e := n.(type) {
			case *ast.BinaryExpr:
				if (e.Op == token.EQL || e.Op == token.NEQ) && secretOperand(e.X) && secretOperand(e.Y) {
					t.Errorf("%s: %s compared with %s: use crypto/subtle", fset.Position(e.Pos()), exprName(e.X), e.Op)
				}
			case *ast.CallExpr:
				sel, ok := e.Fun.(*ast.SelectorExpr)
				if !ok || len(e.Args) != 2 {
					break
				}
				pkg, _ := sel.X.(*ast.Ident)
				if pkg == nil || !(pkg.Name == "bytes" && sel.Sel.Name == "Equal" || pkg.Name == "strings" && sel.Sel.Name == "EqualFold") {
					break
				}
				if secretOperand(e.Args[0]) || secretOperand(e.Args[1]) {
					t.Errorf("%s: %s.%s on %s: use crypto/subtle", fset.Position(e.Pos()), pkg.Name, sel.Sel.Name, exprName(e.Args[0]))
				}
			}
			return true
		})
	}
}

// secretOperand reports whether e may hold a secret: an identifier, a
// field, an index or a conversion of one whose name contains a secret
// word. Literals, nil, calls of len and kind/type fields are not.
func secretOperand(e ast.Expr) bool {
	switch x := e.(type) {
	case *ast.BasicLit:
		return false
	case *ast.Ident:
		return x.Name != "nil" && x.Name != "true" && x.Name != "false" && secretName(x.Name)
	case *ast.SelectorExpr:
		return secretName(x.Sel.Name)
	case *ast.IndexExpr:
		return secretOperand(x.X)
	case *ast.SliceExpr:
		return secretOperand(x.X)
	case *ast.ParenExpr:
		return secretOperand(x.X)
	case *ast.StarExpr:
		return secretOperand(x.X)
	case *ast.CallExpr:
		// Conversions such as string(b) or []byte(s).
		if len(x.Args) == 1 {
			switch f := x.Fun.(type) {
			case *ast.Ident:
				if f.Name == "string" {
					return secretOperand(x.Args[0])
				}
			case *ast.ArrayType:
				return secretOperand(x.Args[0])
			}
		}
	}
	return false
}

func secretName(name string) bool {
	n := strings.ToLower(name)
	for _, suffix := range []string{"kind", "type", "file", "env", "source", "provider", "mode", "endpoint", "authority", "url", "name", "len", "count", "set", "auth"} {
		if strings.HasSuffix(n, suffix) {
			return false
		}
	}
	for _, w := range secretNames {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

func exprName(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.Ident:
		return x.Name
	case *ast.SelectorExpr:
		return exprName(x.X) + "." + x.Sel.Name
	}
	return "an expression"
}
