package store

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Secret fields at rest.
//
// Without a key (Options.SecretsKey nil) the store keeps BMC passwords and
// machine user-data in plain text, as JSON, like every other field: anyone
// who can read provisiond.db (or a backup of it) can read them.
//
// With a key, each secret field is sealed with AES-256-GCM before it is
// written: a random 96-bit nonce per value, and the bucket, record key and
// field name as associated data, so a sealed value copied into another
// record or field does not open. A sealed value is stored as
// "sealed:v1:" + base64(nonce || ciphertext). Empty values stay empty.
//
// The meta bucket holds a sealed check value once a store has been opened
// with a key: from then on it refuses to open without the key, and with a
// different key. A store written without a key opens with one: Open seals
// every plain secret field in one transaction (a one-shot migration) before
// it returns. The pages that held the plain values are freed, not wiped:
// until bbolt reuses them the old values can still be in the file; copy
// the store with `bbolt compact` to leave them behind. There is no way back
// to plain text short of re-creating the records.

// ErrSecretsKey: the secrets key is missing, wrong, or malformed.
var ErrSecretsKey = errors.New("secrets key")

const sealedPrefix = "sealed:v1:"

var (
	secretsCheckKey = []byte("secrets_check")
	secretsCheck    = "provisiond secrets key check"
)

// ReadKeyFile reads a secrets key: a file of exactly 32 bytes, or the
// standard base64 of 32 bytes (surrounding white space ignored).
func ReadKeyFile(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read secrets key file: %w", err)
	}
	if len(raw) == 32 {
		return raw, nil
	}
	if key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw))); err == nil && len(key) == 32 {
		return key, nil
	}
	return nil, fmt.Errorf("secrets key file %s: %w: want 32 bytes or their base64 (head -c 32 /dev/urandom | base64 > FILE), got %d bytes", path, ErrSecretsKey, len(raw))
}

// sealer seals and opens secret fields; a nil sealer keeps them plain.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	if key == nil {
		return nil, nil
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("%w: %d bytes, want 32 (AES-256)", ErrSecretsKey, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSecretsKey, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSecretsKey, err)
	}
	return &sealer{aead: aead}, nil
}

func aad(bucket []byte, key, field string) []byte {
	return []byte(string(bucket) + "\x00" + key + "\x00" + field)
}

// seal returns v sealed for bucket/key/field; v as is without a key or
// when empty.
func (s *sealer) seal(bucket []byte, key, field, v string) string {
	if s == nil || v == "" {
		return v
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(v)+s.aead.Overhead())
	_, _ = rand.Read(nonce) // never fails (crypto/rand)
	out := s.aead.Seal(nonce, nonce, []byte(v), aad(bucket, key, field))
	return sealedPrefix + base64.StdEncoding.EncodeToString(out)
}

// open returns v opened; a plain v is returned as is.
func (s *sealer) open(bucket []byte, key, field, v string) (string, error) {
	if !strings.HasPrefix(v, sealedPrefix) {
		return v, nil
	}
	if s == nil {
		return "", fmt.Errorf("%s of %s %q is sealed and the store has no secrets key: %w", field, bucket, key, ErrSecretsKey)
	}
	raw, err := base64.StdEncoding.DecodeString(v[len(sealedPrefix):])
	if err != nil || len(raw) < s.aead.NonceSize()+s.aead.Overhead() {
		return "", fmt.Errorf("%s of %s %q: malformed sealed value", field, bucket, key)
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], aad(bucket, key, field))
	if err != nil {
		return "", fmt.Errorf("%s of %s %q does not open: wrong secrets key or altered record: %w", field, bucket, key, ErrSecretsKey)
	}
	return string(plain), nil
}

// The secret fields, sealed on the way in and opened on the way out.

func (s *Store) sealHardware(h Hardware) Hardware {
	h.BMC.Password = s.sealer.seal(bHardware, h.ID, "bmc.password", h.BMC.Password)
	return h
}

func (s *Store) openHardware(h *Hardware) (err error) {
	h.BMC.Password, err = s.sealer.open(bHardware, h.ID, "bmc.password", h.BMC.Password)
	return err
}

func (s *Store) sealMachine(m Machine) Machine {
	m.UserData = s.sealer.seal(bMachines, m.HardwareID, "user_data", m.UserData)
	return m
}

func (s *Store) openMachine(m *Machine) (err error) {
	m.UserData, err = s.sealer.open(bMachines, m.HardwareID, "user_data", m.UserData)
	return err
}

// clearSealed empties the sealed fields of h: DecodeHardware has no key.
func clearSealed(h *Hardware) {
	if strings.HasPrefix(h.BMC.Password, sealedPrefix) {
		h.BMC.Password = ""
	}
}

// setUpSecrets checks the key against the store's check value, or, on a
// store without one, seals every plain secret field and stores it. It
// returns how many fields it sealed.
func (s *Store) setUpSecrets(tx *bolt.Tx) (int, error) {
	meta := tx.Bucket(bMeta)
	check := meta.Get(secretsCheckKey)
	switch {
	case check != nil && s.sealer == nil:
		return 0, fmt.Errorf("%w: the store's BMC passwords and user-data are sealed: start provisiond with the --secrets-key-file it was written with", ErrSecretsKey)
	case check != nil:
		if v, err := s.sealer.open(bMeta, string(secretsCheckKey), "check", string(check)); err != nil || v != secretsCheck {
			return 0, fmt.Errorf("%w: the key does not open this store's secrets (wrong --secrets-key-file?)", ErrSecretsKey)
		}
		return 0, nil
	case s.sealer == nil:
		return 0, nil
	}
	sealed := 0
	reseal := func(bucket []byte, fix func(raw []byte) (any, bool, error)) error {
		b := tx.Bucket(bucket)
		var keys, vals [][]byte
		err := b.ForEach(func(k, raw []byte) error {
			v, changed, err := fix(raw)
			if err != nil {
				return fmt.Errorf("%w: record %q of bucket %s: %w", ErrCorrupt, k, bucket, err)
			}
			if changed {
				out, err := json.Marshal(v)
				if err != nil {
					return fmt.Errorf("encode %s %q: %w", bucket, k, err)
				}
				keys, vals = append(keys, bytes.Clone(k)), append(vals, out)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i := range keys {
			if err := b.Put(keys[i], vals[i]); err != nil {
				return fmt.Errorf("seal %s %q: %w", bucket, keys[i], err)
			}
			sealed++
		}
		return nil
	}
	err := reseal(bHardware, func(raw []byte) (any, bool, error) {
		var h Hardware
		if err := json.Unmarshal(raw, &h); err != nil {
			return nil, false, err
		}
		out := s.sealHardware(h)
		return out, out.BMC.Password != h.BMC.Password, nil
	})
	if err != nil {
		return 0, err
	}
	err = reseal(bMachines, func(raw []byte) (any, bool, error) {
		var m Machine
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, false, err
		}
		out := s.sealMachine(m)
		return out, out.UserData != m.UserData, nil
	})
	if err != nil {
		return 0, err
	}
	return sealed, meta.Put(secretsCheckKey, []byte(s.sealer.seal(bMeta, string(secretsCheckKey), "check", secretsCheck)))
}
