package testport_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/testport"
)

// helpers are the packages whose non-test code starts servers for tests
// (or for benchmarks run by the tests).
var helpers = []string{"internal/redistest", "internal/mongotest", "internal/bench"}

// TestNoTestListensOnAFixedPort is the check: in test code, net.Listen
// takes a literal address on port 0, or the listener comes from
// testport.Listen (whose address testport.Addr handed out, below the
// ephemeral range). A listener bound again on a port of the ephemeral
// range can lose it to any outgoing connection on a loaded machine.
func TestNoTestListensOnAFixedPort(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	var bad []string
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") || rel == "internal/testport" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		helper := false
		for _, h := range helpers {
			helper = helper || strings.HasPrefix(rel, h+"/")
		}
		if !strings.HasSuffix(path, "_test.go") && !helper {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "Listen" {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "net" {
				return true
			}
			if lit, ok := call.Args[1].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil && strings.HasSuffix(s, ":0") {
					return true
				}
			}
			bad = append(bad, fset.Position(call.Pos()).String())
			return true
		})
		return nil
	})
	require.NoError(t, err)
	for i, b := range bad {
		bad[i], _ = filepath.Rel(root, b)
	}
	require.Empty(t, bad, "net.Listen on an address that is not \"host:0\": take it from testport.Addr and bind it with testport.Listen")
}

func TestAddrIsBelowTheEphemeralRange(t *testing.T) {
	t.Parallel()
	lo, _ := testport.EphemeralRange()
	seen := map[string]bool{}
	for range 50 {
		addr := testport.Addr(t)
		require.True(t, testport.Safe(addr), addr)
		require.False(t, seen[addr], "each port once")
		seen[addr] = true
		_, ps, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		p, _ := strconv.Atoi(ps)
		require.Less(t, p, lo)
	}
	ln := testport.Listen(t, testport.Addr(t))
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	ln = testport.Listen(t, addr) // again, on the same port
	require.NoError(t, ln.Close())

	eph, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer eph.Close()
	require.False(t, testport.Safe(eph.Addr().String()), "what :0 hands out is in the ephemeral range")
}
