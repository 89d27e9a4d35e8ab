// Package teststore opens the store a test works on: a real bbolt file in
// the test's temporary directory, without fsync, closed when the test
// ends (a failed close fails the test). It is apart from package testkit
// because it imports the store, whose own tests use testkit.
package teststore

import (
	"path/filepath"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// TB is the part of testing.TB that Open uses.
type TB interface {
	Helper()
	TempDir() string
	Cleanup(func())
	Fatal(args ...any)
	Errorf(format string, args ...any)
}

// Open returns a new, empty store that t closes when it ends.
func Open(t TB) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return st
}
