// Package devredis runs an in-process Redis-compatible server (miniredis) for
// `claudeq dev`, with two additions that plain miniredis lacks:
//
//   - a real clock: key TTLs count down with wall-clock time, so keys expire
//     on their own (miniredis normally only expires keys on FastForward);
//   - persistence: the whole dataset can be written to a snapshot file
//     ([Server.Save], and automatically on [Server.Close]) and is loaded again
//     by [Start], so queue contents (asynq uses strings, hashes, lists, sets
//     and sorted sets) survive a graceful restart.
//
// # Clock
//
// miniredis keeps each TTL as a remaining duration that only shrinks when
// FastForward is called. A background goroutine calls FastForward with the
// real (monotonic) time elapsed since its previous call every
// [Options.ClockInterval] (default 100ms), which deletes expired keys. As a
// consequence a key can expire up to one interval early (a TTL set just
// after a tick loses the whole next tick), never late, and PTTL decreases in
// steps. miniredis's own ClockTTL mode would be exact, but it re-scans and
// sorts every key of every database on every command, which is too slow for
// a queue with many keys.
//
// SetTime is deliberately not used: without it miniredis reads time.Now()
// for TIME, EXPIREAT/PEXPIREAT and stream IDs, which is always in step with
// the wall clock.
//
// # Snapshot format
//
// A snapshot is a single encoding/gob stream of [Snapshot] (see its fields):
// a format version, the save time, and for each non-empty database among
// 0–15 its keys with type, value and absolute expiry time. Key TTLs are
// stored as absolute times, so time spent stopped counts against them (as
// with Redis RDB files); keys that expired meanwhile are not loaded. Values
// are byte-exact (binary-safe). Supported types: string, hash (including
// per-field TTLs), list, set, sorted set (exact float64 scores) and stream
// entries (IDs and field/value pairs; consumer groups are not saved).
// HyperLogLogs and databases above 15 are not saved (a warning is logged).
// The file is written to a temporary file in the same directory, fsynced and
// renamed over the old one, so a crash never leaves a torn snapshot.
//
// Save on a running server reads key by key while clients may keep writing,
// so it is not a point-in-time image across keys (each key's value is read
// atomically, but the value and the TTL of one key are read separately).
// Close first stops serving clients and then saves, so the snapshot written
// at a graceful shutdown is exact.
//
// All methods of [Server] are safe for concurrent use.
package devredis

import (
	"bufio"
	"encoding/gob"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// DefaultAddr is the listen address used when [Options.Addr] is empty.
const DefaultAddr = "127.0.0.1:0"

// NumDBs is the number of databases (0 to NumDBs-1) that are saved and
// loaded, matching Redis's default "databases 16".
const NumDBs = 16

// SnapshotVersion is the current [Snapshot.Version].
const SnapshotVersion = 1

// DefaultClockInterval is the default [Options.ClockInterval].
const DefaultClockInterval = 100 * time.Millisecond

// Options configures [Start].
type Options struct {
	// Addr is the TCP listen address; "" means DefaultAddr
	// (loopback, free port).
	Addr string
	// SnapshotPath is the snapshot file loaded by Start (if it exists) and
	// written by Save and Close. "" disables persistence.
	SnapshotPath string
	// Logger receives load/save notices and warnings; nil discards them.
	Logger *slog.Logger
	// ClockInterval is how often TTLs are advanced by the elapsed real
	// time; keys may expire up to this much early. 0 means
	// DefaultClockInterval.
	ClockInterval time.Duration
}

// Server is a running miniredis with a real clock and optional persistence.
// Its methods are safe for concurrent use.
type Server struct {
	m      *miniredis.Miniredis
	path   string
	logger *slog.Logger

	clockMu   sync.Mutex // guards lastTick
	lastTick  time.Time  // when TTLs were last advanced (monotonic)
	stopTick  chan struct{}
	tickDone  chan struct{}
	tickEvery time.Duration

	saveMu    sync.Mutex // serialises Save
	closeOnce sync.Once
	closeErr  error
}

// Start starts a server on opts.Addr. If opts.SnapshotPath names an existing
// file, its contents are loaded before the server accepts connections; an
// unreadable or corrupt snapshot is an error (the file is left untouched).
// A missing file is not an error.
func Start(opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	addr := opts.Addr
	if addr == "" {
		addr = DefaultAddr
	}

	interval := opts.ClockInterval
	if interval <= 0 {
		interval = DefaultClockInterval
	}

	m := miniredis.NewMiniRedis()
	// TTLs of restored keys are relative to start, which is also the
	// clock's first baseline.
	start := time.Now()

	if opts.SnapshotPath != "" {
		snap, err := readSnapshot(opts.SnapshotPath)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			logger.Info("devredis: no snapshot yet, starting empty", "path", opts.SnapshotPath)
		case err != nil:
			return nil, err
		default:
			n, expired := restore(m, snap, start, logger)
			logger.Info("devredis: snapshot loaded", "path", opts.SnapshotPath,
				"keys", n, "expired_while_stopped", expired, "saved_at", snap.SavedAt)
		}
	}

	if err := m.StartAddr(addr); err != nil {
		return nil, fmt.Errorf("devredis: listen on %s: %w", addr, err)
	}

	s := &Server{
		m:         m,
		path:      opts.SnapshotPath,
		logger:    logger,
		lastTick:  start,
		stopTick:  make(chan struct{}),
		tickDone:  make(chan struct{}),
		tickEvery: interval,
	}
	go s.tick()
	return s, nil
}

// tick advances the clock every tickEvery so that TTLs count down.
func (s *Server) tick() {
	defer close(s.tickDone)
	t := time.NewTicker(s.tickEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stopTick:
			return
		case <-t.C:
			s.advance()
		}
	}
}

// advance decreases all TTLs by the real time elapsed since the previous
// call, deleting expired keys.
func (s *Server) advance() {
	s.clockMu.Lock()
	defer s.clockMu.Unlock()
	s.advanceLocked()
}

// advanceLocked is advance with clockMu held; it returns the new baseline.
func (s *Server) advanceLocked() time.Time {
	now := time.Now()
	if d := now.Sub(s.lastTick); d > 0 {
		s.m.FastForward(d)
		s.lastTick = now
	}
	return s.lastTick
}

// Addr returns the listen address, "host:port".
func (s *Server) Addr() string { return s.m.Addr() }

// URL returns "redis://host:port/0".
func (s *Server) URL() string { return "redis://" + s.m.Addr() + "/0" }

// Save writes a snapshot of all databases to Options.SnapshotPath,
// atomically replacing the previous one. It is a no-op without a
// SnapshotPath. See the package documentation for consistency guarantees.
func (s *Server) Save() error {
	if s.path == "" {
		return nil
	}
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	// Hold the clock while reading so that all TTLs are relative to the
	// same instant.
	s.clockMu.Lock()
	snap := capture(s.m, s.advanceLocked(), s.logger)
	s.clockMu.Unlock()
	if err := writeSnapshot(s.path, snap); err != nil {
		return err
	}
	n := 0
	for _, db := range snap.DBs {
		n += len(db.Keys)
	}
	s.logger.Info("devredis: snapshot saved", "path", s.path, "keys", n)
	return nil
}

// Close stops the clock goroutine, stops serving (closing client
// connections), and then, if a SnapshotPath is set, saves the final state.
// It returns the Save error, if any. Calling Close again returns the same
// result without doing anything.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.stopTick)
		<-s.tickDone
		s.m.Close()
		s.closeErr = s.Save()
	})
	return s.closeErr
}

// Snapshot is the on-disk format (encoding/gob) of a saved dataset.
type Snapshot struct {
	// Version is SnapshotVersion; other versions are rejected on load.
	Version int
	// SavedAt is when the snapshot was taken.
	SavedAt time.Time
	// DBs holds the non-empty databases, by ascending ID.
	DBs []DBSnapshot
}

// DBSnapshot is one database in a [Snapshot].
type DBSnapshot struct {
	ID   int
	Keys []KeySnapshot
}

// KeySnapshot is one key in a [DBSnapshot]. Exactly the value field matching
// Type is set.
type KeySnapshot struct {
	Name string
	// Type is the Redis type name: "string", "hash", "list", "set", "zset"
	// or "stream".
	Type string
	// ExpireAt is the absolute expiry time; the zero time means no TTL.
	ExpireAt time.Time

	String string
	Hash   map[string]string
	// HashFieldExpireAt holds per-field expiry times (HEXPIRE); fields
	// without a TTL are absent.
	HashFieldExpireAt map[string]time.Time
	List              []string
	Set               []string
	ZSet              []ZMember
	Stream            []StreamEntry
}

// ZMember is a sorted-set member with its score.
type ZMember struct {
	Member string
	Score  float64
}

// StreamEntry is a stream entry: its ID and alternating field/value list.
type StreamEntry struct {
	ID     string
	Values []string
}

// capture reads all databases into a Snapshot; now is the instant the TTLs
// were last advanced to (remaining TTLs are relative to it).
func capture(m *miniredis.Miniredis, now time.Time, logger *slog.Logger) *Snapshot {
	snap := &Snapshot{Version: SnapshotVersion, SavedAt: now}
	for id := 0; id < NumDBs; id++ {
		db := m.DB(id)
		var keys []KeySnapshot
		for _, name := range db.Keys() {
			k, ok := captureKey(db, name, now, logger, id)
			if ok {
				keys = append(keys, k)
			}
		}
		if len(keys) > 0 {
			snap.DBs = append(snap.DBs, DBSnapshot{ID: id, Keys: keys})
		}
	}
	return snap
}

func captureKey(db *miniredis.RedisDB, name string, now time.Time, logger *slog.Logger, id int) (KeySnapshot, bool) {
	k := KeySnapshot{Name: name, Type: db.Type(name)}
	var err error
	switch k.Type {
	case "string":
		k.String, err = db.Get(name)
	case "hash":
		var fields []string
		fields, err = db.HKeys(name)
		k.Hash = make(map[string]string, len(fields))
		for _, f := range fields {
			k.Hash[f] = db.HGet(name, f)
			if ttl := db.HTTL(name, f); ttl > 0 {
				if k.HashFieldExpireAt == nil {
					k.HashFieldExpireAt = map[string]time.Time{}
				}
				k.HashFieldExpireAt[f] = now.Add(ttl)
			}
		}
	case "list":
		k.List, err = db.List(name)
	case "set":
		k.Set, err = db.Members(name)
	case "zset":
		var scores map[string]float64
		scores, err = db.SortedSet(name)
		for member, score := range scores {
			k.ZSet = append(k.ZSet, ZMember{Member: member, Score: score})
		}
		sort.Slice(k.ZSet, func(i, j int) bool {
			a, b := k.ZSet[i], k.ZSet[j]
			return a.Score < b.Score || (a.Score == b.Score && a.Member < b.Member)
		})
	case "stream":
		var entries []miniredis.StreamEntry
		entries, err = db.Stream(name)
		for _, e := range entries {
			k.Stream = append(k.Stream, StreamEntry{ID: e.ID, Values: append([]string(nil), e.Values...)})
		}
	case "":
		return k, false // deleted or expired meanwhile
	default:
		logger.Warn("devredis: key type not persisted, skipping", "db", id, "key", name, "type", k.Type)
		return k, false
	}
	if err != nil {
		// The key changed type or vanished between calls; skip it.
		logger.Warn("devredis: key changed while saving, skipping", "db", id, "key", name, "error", err)
		return k, false
	}
	if ttl := db.TTL(name); ttl > 0 {
		k.ExpireAt = now.Add(ttl)
	}
	return k, true
}

// restore loads snap into m and returns the number of keys loaded and of
// keys skipped because they expired while the server was stopped.
func restore(m *miniredis.Miniredis, snap *Snapshot, now time.Time, logger *slog.Logger) (loaded, expired int) {
	for _, dbs := range snap.DBs {
		db := m.DB(dbs.ID)
		for _, k := range dbs.Keys {
			var ttl time.Duration
			if !k.ExpireAt.IsZero() {
				if ttl = k.ExpireAt.Sub(now); ttl <= 0 {
					expired++
					continue
				}
			}
			if err := restoreKey(db, k, now); err != nil {
				logger.Warn("devredis: cannot restore key, skipping", "db", dbs.ID, "key", k.Name, "type", k.Type, "error", err)
				db.Del(k.Name)
				continue
			}
			if !db.Exists(k.Name) {
				continue // e.g. a hash whose fields all expired
			}
			if ttl > 0 {
				db.SetTTL(k.Name, ttl)
			}
			loaded++
		}
	}
	return loaded, expired
}

func restoreKey(db *miniredis.RedisDB, k KeySnapshot, now time.Time) error {
	switch k.Type {
	case "string":
		return db.Set(k.Name, k.String)
	case "hash":
		for f, v := range k.Hash {
			at, hasTTL := k.HashFieldExpireAt[f]
			if hasTTL && !at.After(now) {
				continue
			}
			db.HSet(k.Name, f, v)
			if hasTTL {
				db.HExpire(k.Name, f, at.Sub(now))
			}
		}
		return nil
	case "list":
		if len(k.List) == 0 {
			return nil
		}
		_, err := db.Push(k.Name, k.List...)
		return err
	case "set":
		if len(k.Set) == 0 {
			return nil
		}
		_, err := db.SetAdd(k.Name, k.Set...)
		return err
	case "zset":
		for _, z := range k.ZSet {
			if _, err := db.ZAdd(k.Name, z.Score, z.Member); err != nil {
				return err
			}
		}
		return nil
	case "stream":
		for _, e := range k.Stream {
			if _, err := db.XAdd(k.Name, e.ID, e.Values); err != nil {
				return err
			}
		}
		return nil
	default:
		return fmt.Errorf("unsupported type %q", k.Type)
	}
}

func readSnapshot(path string) (*Snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("devredis: open snapshot: %w", err)
	}
	defer f.Close()
	var snap Snapshot
	if err := gob.NewDecoder(bufio.NewReader(f)).Decode(&snap); err != nil {
		return nil, fmt.Errorf("devredis: decode snapshot %s: %w", path, err)
	}
	if snap.Version != SnapshotVersion {
		return nil, fmt.Errorf("devredis: snapshot %s has version %d, want %d", path, snap.Version, SnapshotVersion)
	}
	return &snap, nil
}

// writeSnapshot atomically replaces path with snap: temp file in the same
// directory, fsync, rename, fsync of the directory.
func writeSnapshot(path string, snap *Snapshot) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("devredis: create snapshot directory: %w", err)
	}
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("devredis: create temp snapshot: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	w := bufio.NewWriter(f)
	if err := gob.NewEncoder(w).Encode(snap); err != nil {
		return fmt.Errorf("devredis: encode snapshot: %w", err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("devredis: write snapshot: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("devredis: sync snapshot: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("devredis: close snapshot: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("devredis: rename snapshot: %w", err)
	}
	// Make the rename durable; not supported everywhere, so best effort.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
