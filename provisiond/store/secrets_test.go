package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	testPassword = "bmc-secret-p4ssw0rd"
	testUserData = "secret-user-data-xyzzy"
)

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}

// secretsOf reads back the secret fields of seeded's records.
func secretsOf(t *testing.T, s *Store) (string, string) {
	t.Helper()
	ctx := context.Background()
	h, err := s.GetHardware(ctx, "h1")
	must(t, err)
	m, err := s.GetMachine(ctx, "h1")
	must(t, err)
	list, err := Read(ctx, s, func(tx *Tx) ([]Machine, error) { return tx.ListMachines() })
	must(t, err)
	if len(list) != 1 || list[0].UserData != m.UserData {
		t.Fatalf("ListMachines: %+v", list)
	}
	return h.BMC.Password, m.UserData
}

func fileHas(t *testing.T, path string, secrets ...string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	must(t, err)
	var found []string
	for _, s := range secrets {
		if bytes.Contains(raw, []byte(s)) {
			found = append(found, s)
		}
	}
	return found
}

// TestSecretsSealed is issue 13: BMC passwords and user-data were plain
// text in provisiond.db.
func TestSecretsSealed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "provisiond.db")
	key := newKey(t)
	seeded(t, path, Options{NoSync: true, SecretsKey: key})
	if found := fileHas(t, path, testPassword, testUserData, "#cloud-config"); len(found) > 0 {
		t.Fatalf("the db file holds %q in plain text", found)
	}

	// Round trip.
	s, err := Open(path, Options{SecretsKey: key})
	must(t, err)
	pw, ud := secretsOf(t, s)
	if pw != testPassword || !strings.HasSuffix(ud, testUserData) {
		t.Fatalf("read back %q %q", pw, ud)
	}
	// The DHCP path has no key: it gets no password, not ciphertext.
	raw, err := Read(context.Background(), s, func(tx *Tx) ([]byte, error) {
		r, err := tx.HardwareByMACRaw("aa:bb:cc:00:00:01")
		return bytes.Clone(r), err
	})
	must(t, err)
	h, err := DecodeHardware(raw)
	must(t, err)
	if h.BMC.Password != "" {
		t.Fatalf("DecodeHardware gave password %q", h.BMC.Password)
	}
	must(t, s.Close())

	tests := map[string]struct {
		key  []byte
		want string
	}{
		"no key":    {nil, "--secrets-key-file"},
		"wrong key": {newKey(t), "wrong --secrets-key-file"},
		"short key": {key[:16], "want 32"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := Open(path, Options{SecretsKey: tc.key})
			if err == nil {
				_ = s.Close() // test cleanup
				t.Fatal("opened")
			}
			if !errors.Is(err, ErrSecretsKey) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v, want ErrSecretsKey naming %s and saying %q", err, path, tc.want)
			}
		})
	}
}

// TestSecretsMigration: a store written without a key is sealed when it
// is first opened with one.
func TestSecretsMigration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "provisiond.db")
	seeded(t, path, Options{NoSync: true})
	if found := fileHas(t, path, testPassword, testUserData); len(found) != 2 {
		t.Fatalf("without a key the secrets should be plain (today's behaviour): found %q", found)
	}
	key := newKey(t)
	s, err := Open(path, Options{SecretsKey: key})
	must(t, err)
	if rep := s.OpenReport(); rep.Sealed != 2 {
		t.Fatalf("sealed %d fields at open, want 2", rep.Sealed)
	}
	pw, ud := secretsOf(t, s)
	if pw != testPassword || !strings.HasSuffix(ud, testUserData) {
		t.Fatalf("read back %q %q", pw, ud)
	}
	// Live records are sealed; freed pages may still hold the old values
	// (documented), so the check is on what the store reads raw.
	must(t, s.View(context.Background(), func(tx *Tx) error {
		for _, b := range [][]byte{bHardware, bMachines} {
			v := tx.tx.Bucket(b).Get([]byte("h1"))
			if bytes.Contains(v, []byte(testPassword)) || bytes.Contains(v, []byte(testUserData)) {
				t.Errorf("%s record still plain: %s", b, v)
			}
		}
		return nil
	}))
	must(t, s.Close())
	if _, err := Open(path, Options{}); !errors.Is(err, ErrSecretsKey) {
		t.Fatalf("migrated store opened without its key: %v", err)
	}
}

func TestReadKeyFile(t *testing.T) {
	dir := t.TempDir()
	key := newKey(t)
	tests := map[string]struct {
		content []byte
		ok      bool
	}{
		"raw 32 bytes":     {key, true},
		"base64":           {[]byte(base64.StdEncoding.EncodeToString(key) + "\n"), true},
		"too short":        {key[:31], false},
		"base64 of 16":     {[]byte(base64.StdEncoding.EncodeToString(key[:16])), false},
		"passphrase words": {[]byte("correct horse battery staple"), false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			must(t, os.WriteFile(p, tc.content, 0o600))
			got, err := ReadKeyFile(p)
			if tc.ok != (err == nil) || (tc.ok && !bytes.Equal(got, key)) {
				t.Fatalf("ReadKeyFile = %x, %v; want ok=%v", got, err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), p) {
				t.Fatalf("err = %v, want it to name the file", err)
			}
		})
	}
}

// TestSealedValueBoundToRecord: a sealed password copied into another
// record does not open there.
func TestSealedValueBoundToRecord(t *testing.T) {
	sl, err := newSealer(newKey(t))
	must(t, err)
	v := sl.seal(bHardware, "h1", "bmc.password", "pw")
	if got, err := sl.open(bHardware, "h1", "bmc.password", v); err != nil || got != "pw" {
		t.Fatalf("open = %q, %v", got, err)
	}
	if _, err := sl.open(bHardware, "h2", "bmc.password", v); !errors.Is(err, ErrSecretsKey) {
		t.Fatalf("opened in another record: %v", err)
	}
	if v2 := sl.seal(bHardware, "h1", "bmc.password", "pw"); v2 == v {
		t.Fatal("same nonce twice")
	}
}
