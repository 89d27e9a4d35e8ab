// Package store keeps provisiond's state in a bbolt database: hardware,
// templates, machines, workflows, DHCP leases and an append-only event log.
//
// Records are JSON. Every lookup by id, MAC or IP goes through an index
// bucket, never a scan. All buckets are created when the database opens;
// reads use View, writes Update (or Batch for group commit), and no
// transaction is opened inside another. Bytes are copied out of a
// transaction before it ends (json.Unmarshal copies).
package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Sentinel errors. Adapters turn them into status codes with errors.Is.
var (
	// ErrNotFound: no record with that key.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique key (id, MAC, IP, template name) is taken.
	ErrConflict = errors.New("already exists")
	// ErrInUse: the record is referenced by another and cannot be deleted.
	ErrInUse = errors.New("in use")
	// ErrLocked: another process holds the database open.
	ErrLocked = errors.New("database is locked by another process")
	// ErrCorrupt: the file is not a usable bbolt database.
	ErrCorrupt = errors.New("database file is corrupt or not a provisiond database")
)

var (
	bHardware    = []byte("hardware")
	bHWByMAC     = []byte("hardware_by_mac")
	bHWByIP      = []byte("hardware_by_ip")
	bTemplates   = []byte("templates")
	bTplByName   = []byte("templates_by_name")
	bMachines    = []byte("machines")
	bMachByTpl   = []byte("machines_by_template") // template id + "/" + hardware id
	bWorkflows   = []byte("workflows")
	bWFByHW      = []byte("workflows_by_hardware") // hardware id + "/" + workflow id
	bLeases      = []byte("leases")
	bLeaseByIP   = []byte("leases_by_ip")
	bEvents      = []byte("events")             // seq (big endian) → event
	bEventsByWF  = []byte("events_by_workflow") // workflow id + "/" + seq → nil
	bMeta        = []byte("meta")
	allBuckets   = [][]byte{bHardware, bHWByMAC, bHWByIP, bTemplates, bTplByName, bMachines, bMachByTpl, bWorkflows, bWFByHW, bLeases, bLeaseByIP, bEvents, bEventsByWF, bMeta}
	schemaKey    = []byte("schema")
	schemaNumber = []byte("1")
)

// Options tune Open.
type Options struct {
	// LockTimeout bounds the wait for another process's lock on the file.
	// Zero means one second.
	LockTimeout time.Duration
	// NoSync turns off fsync; for tests and benchmarks only.
	NoSync bool
	// SecretsKey, 32 bytes, seals BMC passwords and machine user-data at
	// rest with AES-256-GCM (see secrets.go). Nil keeps them plain. A store
	// once opened with a key refuses to open without it.
	SecretsKey []byte
	// Log receives write failures (rate limited) and recoveries. Nil: discard.
	Log *slog.Logger
}

// Store is provisiond's database. It is safe for concurrent use.
type Store struct {
	db     *bolt.DB
	path   string
	log    *slog.Logger
	sealer *sealer
	report OpenReport
	health health
	now    func() time.Time
	// failWrites, set by tests, makes a commit fail as a full disk would.
	failWrites func() error

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever events are appended

	// durable is the id of the newest write transaction known to be on
	// disk: its Update or Batch returned nil, so its fsync is done. bbolt
	// makes a commit visible to readers when it writes the meta page, a
	// moment before the fsync of that page ends; Tx.Durable tells readers
	// that act on what they saw (the DHCP server reusing a stored lease for
	// an ACK) whether it can still be lost.
	durable atomic.Uint64
}

// Open opens or creates the database at path. It refuses an existing
// file that is empty, fails bbolt's consistency check, holds a record that
// does not decode, or does not go with opts.SecretsKey: nothing that
// could be a damaged store starts as an empty or half-readable one. A path
// that does not exist is created as a new, empty store.
func Open(path string, opts Options) (*Store, error) {
	if opts.LockTimeout == 0 {
		opts.LockTimeout = time.Second
	}
	sl, err := newSealer(opts.SecretsKey)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// bbolt makes a 0-byte file a new database. An existing empty file is
	// rather a store that lost its content (a failed restore, a full disk
	// at creation, a truncating copy): refuse it.
	if fi, err := os.Stat(path); err == nil && fi.Size() == 0 {
		return nil, fmt.Errorf("open store %s: %w: it is a 0-byte file: restore it from a backup, or remove it to start with an empty store", path, ErrCorrupt)
	}
	db, err := openBolt(path, opts)
	if err != nil {
		switch {
		case errors.Is(err, bolterrors.ErrTimeout):
			return nil, fmt.Errorf("open store %s: %w (waited %s)", path, ErrLocked, opts.LockTimeout)
		case errors.Is(err, ErrCorrupt):
			return nil, fmt.Errorf("open store %s: %w", path, err)
		case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrChecksum):
			return nil, fmt.Errorf("open store %s: %w: %v", path, ErrCorrupt, err)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{db: db, path: path, log: log.With("component", "store"), sealer: sl, now: time.Now, changed: make(chan struct{})}
	if err := s.setUp(); err != nil {
		_ = db.Close() // refused: the reason is the news
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// Everything committed so far is on disk: the Update in setUp returned.
	_ = db.View(func(tx *bolt.Tx) error { s.durable.Store(uint64(tx.ID())); return nil })
	return s, nil
}

// openBolt is bolt.Open; a corrupt meta or freelist page can make it
// panic, which becomes ErrCorrupt.
func openBolt(path string, opts Options) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %v", ErrCorrupt, r)
		}
	}()
	return bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, NoSync: opts.NoSync, FreelistType: bolt.FreelistMapType})
}

// setUp checks the file, creates the buckets and checks the schema and
// the secrets key, then decodes every record.
func (s *Store) setUp() error {
	start := time.Now()
	if err := checkPages(s.db); err != nil {
		return err
	}
	s.report.PageCheck = time.Since(start)
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		meta := tx.Bucket(bMeta)
		if v := meta.Get(schemaKey); v != nil && string(v) != string(schemaNumber) {
			return fmt.Errorf("%w: schema %q, this provisiond reads %q", ErrCorrupt, v, schemaNumber)
		}
		if err := meta.Put(schemaKey, schemaNumber); err != nil {
			return err
		}
		var err error
		s.report.Sealed, err = s.setUpSecrets(tx)
		return err
	})
	if err != nil {
		return err
	}
	start = time.Now()
	s.report.Records, err = s.decodeAll()
	s.report.Decode = time.Since(start)
	return err
}

// OpenReport says what Open checked and how long that took.
func (s *Store) OpenReport() OpenReport { return s.report }

// Path is the database file.
func (s *Store) Path() string { return s.path }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Check verifies the file's consistency (bbolt's walk of every page and the
// freelist): after a crash it proves the database is whole.
func (s *Store) Check(ctx context.Context) error {
	return s.View(ctx, func(tx *Tx) error {
		var errs []error
		for err := range tx.tx.Check() {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return fmt.Errorf("check store: %w: %w", ErrCorrupt, errors.Join(errs...))
		}
		return nil
	})
}

// Changed returns a channel that is closed the next time an event is
// appended. Watchers read the log, then wait on a fresh Changed channel.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *Store) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// View runs fn in a read-only transaction.
func (s *Store) View(ctx context.Context, fn func(*Tx) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	defer s.recoverCorrupt(&err)
	return s.db.View(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx, s: s}) })
}

// recoverCorrupt turns a panic in a transaction into an ErrCorrupt error:
// bbolt panics on some damaged pages (it rolls the transaction back
// first), and one bad page must not take the whole daemon down. /healthz
// reports it.
func (s *Store) recoverCorrupt(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("store %s: transaction panicked, the database may be corrupt: %w: %v", s.path, ErrCorrupt, r)
		s.storageFailed(*err)
	}
}

// Update runs fn in a read-write transaction; it commits if fn returns nil.
func (s *Store) Update(ctx context.Context, fn func(*Tx) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	defer s.recoverCorrupt(&err)
	var (
		t        *Tx
		id       uint64 // read inside: a closed bolt.Tx has no ID
		fnFailed bool
	)
	err = s.db.Update(func(tx *bolt.Tx) error {
		t, id = &Tx{tx: tx, s: s}, uint64(tx.ID())
		if err := fn(t); err != nil {
			fnFailed = true
			return err
		}
		return s.injectedWriteError()
	})
	s.wrote(err, fnFailed)
	if err == nil {
		s.markDurable(id)
		if t.appended {
			s.notify()
		}
	}
	return err
}

// Batch is Update with group commit: concurrent calls share one fsync, so
// many small durable writes (DHCP leases) scale. fn may run more than once
// and must be idempotent.
func (s *Store) Batch(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	appended, fnFailed := false, false
	var id uint64
	err := s.db.Batch(func(tx *bolt.Tx) error {
		t := &Tx{tx: tx, s: s}
		err := fn(t)
		appended = appended || t.appended
		id = uint64(tx.ID())
		if fnFailed = err != nil; fnFailed {
			return err
		}
		return s.injectedWriteError()
	})
	s.wrote(err, fnFailed)
	if err == nil {
		s.markDurable(id)
		if appended {
			s.notify()
		}
	}
	return err
}

// wrote records the outcome of a write for Health. An error that fn
// returned says nothing about the storage.
func (s *Store) wrote(err error, fnFailed bool) {
	switch {
	case err == nil:
		s.storageOK()
	case !fnFailed:
		s.storageFailed(err)
	}
}

func (s *Store) injectedWriteError() error {
	if s.failWrites != nil {
		return s.failWrites()
	}
	return nil
}

// markDurable raises the durable watermark to id.
func (s *Store) markDurable(id uint64) {
	for {
		cur := s.durable.Load()
		if id <= cur || s.durable.CompareAndSwap(cur, id) {
			return
		}
	}
}

// Tx is a transaction. Its methods must not be used after fn returns.
type Tx struct {
	tx       *bolt.Tx
	s        *Store
	appended bool
}

// Durable reports whether all that this read-only transaction sees is on
// disk (with Options.NoSync: committed). It is false for a moment after a
// commit becomes visible, until its Update or Batch returns; callers that
// promise something to the outside on the strength of a read must then
// take the write path instead. Always false in a write transaction.
func (t *Tx) Durable() bool {
	return !t.tx.Writable() && uint64(t.tx.ID()) <= t.s.durable.Load()
}

// NewID returns a random 128-bit id in hex.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

func get[T any](tx *bolt.Tx, bucket []byte, key string, what string) (T, error) {
	var v T
	raw := tx.Bucket(bucket).Get([]byte(key))
	if raw == nil {
		return v, fmt.Errorf("%s %q: %w", what, key, ErrNotFound)
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("decode %s %q: %w", what, key, err)
	}
	return v, nil
}

func put(tx *bolt.Tx, bucket []byte, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s %q: %w", bucket, key, err)
	}
	return tx.Bucket(bucket).Put([]byte(key), raw)
}

func list[T any](tx *bolt.Tx, bucket []byte, what string) ([]T, error) {
	var out []T
	err := tx.Bucket(bucket).ForEach(func(k, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("decode %s %q: %w", what, k, err)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

// lookup follows an index bucket to the primary key.
func lookup(tx *bolt.Tx, index []byte, key string) (string, bool) {
	v := tx.Bucket(index).Get([]byte(key))
	return string(v), v != nil
}

func u64(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}

// Read runs fn in a read-only transaction and returns its value.
func Read[T any](ctx context.Context, s *Store, fn func(*Tx) (T, error)) (T, error) {
	var v T
	err := s.View(ctx, func(tx *Tx) error {
		var err error
		v, err = fn(tx)
		return err
	})
	return v, err
}

// GetHardware returns the hardware with id.
func (s *Store) GetHardware(ctx context.Context, id string) (Hardware, error) {
	return Read(ctx, s, func(tx *Tx) (Hardware, error) { return tx.Hardware(id) })
}

// GetHardwareByMAC returns the hardware with an interface of that MAC.
func (s *Store) GetHardwareByMAC(ctx context.Context, mac string) (Hardware, error) {
	return Read(ctx, s, func(tx *Tx) (Hardware, error) { return tx.HardwareByMAC(mac) })
}

// GetHardwareByIP returns the hardware with an interface of that address.
func (s *Store) GetHardwareByIP(ctx context.Context, ip string) (Hardware, error) {
	return Read(ctx, s, func(tx *Tx) (Hardware, error) { return tx.HardwareByIP(ip) })
}

// GetTemplate returns the template with id.
func (s *Store) GetTemplate(ctx context.Context, id string) (Template, error) {
	return Read(ctx, s, func(tx *Tx) (Template, error) { return tx.Template(id) })
}

// GetMachine returns the machine on hardware id.
func (s *Store) GetMachine(ctx context.Context, hardwareID string) (Machine, error) {
	return Read(ctx, s, func(tx *Tx) (Machine, error) { return tx.Machine(hardwareID) })
}

// GetWorkflow returns the workflow with id.
func (s *Store) GetWorkflow(ctx context.Context, id string) (Workflow, error) {
	return Read(ctx, s, func(tx *Tx) (Workflow, error) { return tx.Workflow(id) })
}
