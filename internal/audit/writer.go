package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// Errors of Writer.Log. Both are *claudeq.Error of KindUnavailable, so the
// api answers 503 if it passes them on.
var (
	// ErrOverloaded: the buffer stayed full for BlockTimeout and the record
	// could not be spilled to disk.
	ErrOverloaded error = &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "audit.Log",
		Msg: "the audit log is overloaded, try again shortly", RetryAfter: time.Second}
	// ErrClosed: the Writer is closed.
	ErrClosed error = &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "audit.Log",
		Msg: "the audit log is shutting down"}
	// ErrTicketUsed: a Ticket's Log was called twice.
	ErrTicketUsed = errors.New("audit: ticket already used")
)

// WriterOptions shape a Writer. Zero fields take the defaults.
type WriterOptions struct {
	// Buffer is how many records may wait in memory, counting the room
	// held by Tickets not yet used. CLAUDEQ_AUDIT_BUFFER, default 10000.
	Buffer int
	// MaxBatch caps the records of one append. Default 500.
	MaxBatch int
	// FlushInterval is how long the writer waits for more records after
	// the first of a batch, so that appends carry many records each (one
	// lease, one insert) instead of one per request under light load.
	// CLAUDEQ_AUDIT_FLUSH_INTERVAL, default 50ms; negative flushes at once.
	FlushInterval time.Duration
	// BlockTimeout is how long Log waits for room in a full buffer before
	// spilling (or refusing). CLAUDEQ_AUDIT_BLOCK_TIMEOUT, default 20ms.
	BlockTimeout time.Duration
	// SpillDir is where records go when the buffer stays full, to be written
	// later. CLAUDEQ_AUDIT_SPILL_DIR, default none (Log then returns
	// ErrOverloaded instead). Use a directory of this process alone.
	SpillDir string
	// WriteTimeout bounds one append. Default 10s.
	WriteTimeout time.Duration
	// RetryMin and RetryMax bound the backoff between failed appends.
	// Defaults 100ms and 5s.
	RetryMin, RetryMax time.Duration
	// ReplayInterval is how often an idle writer looks for spill files.
	// Default 1s.
	ReplayInterval time.Duration
	// Logger defaults to the Chain's.
	Logger *slog.Logger
}

// Stats are a Writer's counters since it started, for metrics. Logged +
// Refused is every Log call; Written + Buffered + the spill files hold
// every Logged record.
type Stats struct {
	Logged       uint64 // records accepted by Log (buffered or spilled)
	Written      uint64 // records stored in the chain (including replayed ones)
	Appends      uint64 // successful appends to the chain (each one lease and one insert)
	Blocked      uint64 // Log calls that found the buffer full and waited
	Spilled      uint64 // records written to a spill file (by Log or Close)
	Replayed     uint64 // records read back from spill files
	Refused      uint64 // Log calls that returned an error
	StoreErrors  uint64 // failed appends (each retried)
	SpillCorrupt uint64 // unreadable spill lines skipped (a write torn by a crash)
	Buffered     int    // records waiting in memory now
}

// Writer appends records to a Chain in the background. Log is safe for
// concurrent use; see the package documentation for its guarantees.
type Writer struct {
	c    *Chain
	opts WriterOptions
	log  *slog.Logger

	mu     sync.RWMutex // held for reading by Log, for writing by Close
	closed bool
	in     chan Record
	// sem holds one unit per record in in or promised to it by a Ticket;
	// its capacity is in's, so that sending to in never blocks.
	sem chan struct{}

	abort    context.Context // cancelled when Close's context ends
	cancel   context.CancelFunc
	stop     chan struct{} // closed by Close
	done     chan struct{} // closed when run returns
	closeErr error

	spillMu   sync.Mutex
	spillFile *os.File

	logged, written, appends, blocked, spilled, replayed, refused, storeErrors, corrupt atomic.Uint64
}

// NewWriter starts a Writer on c. Close stops it.
func (c *Chain) NewWriter(opts WriterOptions) (*Writer, error) {
	if opts.Buffer <= 0 {
		opts.Buffer = 10000
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 500
	}
	if opts.BlockTimeout <= 0 {
		opts.BlockTimeout = 20 * time.Millisecond
	}
	if opts.FlushInterval == 0 {
		opts.FlushInterval = 50 * time.Millisecond
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = 100 * time.Millisecond
	}
	if opts.RetryMax < opts.RetryMin {
		opts.RetryMax = max(5*time.Second, opts.RetryMin)
	}
	if opts.ReplayInterval <= 0 {
		opts.ReplayInterval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = c.cfg.Logger
	}
	if opts.SpillDir != "" {
		if err := os.MkdirAll(opts.SpillDir, 0o700); err != nil {
			return nil, fmt.Errorf("audit: spill directory: %w", err)
		}
	}
	w := &Writer{c: c, opts: opts, log: opts.Logger, in: make(chan Record, opts.Buffer), sem: make(chan struct{}, opts.Buffer),
		stop: make(chan struct{}), done: make(chan struct{})}
	w.abort, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return w, nil
}

// Log queues rec for the chain and returns at once, unless the buffer is
// full: then it waits up to BlockTimeout, then spills rec to SpillDir, and
// only if that is impossible returns ErrOverloaded. After Close it returns
// ErrClosed. rec's chain fields are ignored; EventID and Time are set if
// empty. It is Reserve and the ticket's Log at once.
func (w *Writer) Log(rec Record) error {
	t, err := w.Reserve()
	if err != nil {
		return err
	}
	return t.Log(rec)
}

// acquire takes a unit of room in the buffer, waiting up to BlockTimeout
// when there is none; w.mu is held for reading.
func (w *Writer) acquire() bool {
	select {
	case w.sem <- struct{}{}:
		return true
	default:
	}
	w.blocked.Add(1)
	t := time.NewTimer(w.opts.BlockTimeout)
	defer t.Stop()
	select {
	case w.sem <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// took gives back the unit of a record taken out of w.in.
func (w *Writer) took() { <-w.sem }

// spillOrRefuse spills rec, or returns refusal when there is no spill
// directory or the spill fails.
func (w *Writer) spillOrRefuse(rec *Record, refusal error) error {
	if w.opts.SpillDir != "" {
		err := w.spill([]*Record{rec})
		if err == nil {
			w.logged.Add(1)
			return nil
		}
		w.log.Error("audit: cannot spill a record; refusing it", "err", err)
	}
	w.refused.Add(1)
	return refusal
}

// Ticket is room for one record, promised before the event it records
// happens: Reserve it before serving a request and Log the request's
// record after, and the record cannot be refused for want of room.
// Use a Ticket once (Log or Cancel); it is not safe for concurrent use.
type Ticket struct {
	w    *Writer
	held bool // a unit of the buffer; false: the record is to be spilled
	used bool
}

// Reserve promises room for one record: a place in the buffer, waiting up
// to BlockTimeout when it is full, or else a place in the spill directory.
// Without either it returns ErrOverloaded (ErrClosed after Close), and the
// caller should refuse what it was about to do rather than do it
// unrecorded. A held ticket keeps its room until Log or Cancel.
func (w *Writer) Reserve() (*Ticket, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		w.refused.Add(1)
		return nil, ErrClosed
	}
	if w.acquire() {
		return &Ticket{w: w, held: true}, nil
	}
	if w.opts.SpillDir != "" {
		return &Ticket{w: w}, nil
	}
	w.refused.Add(1)
	return nil, ErrOverloaded
}

// Log queues rec in the ticket's room. It fails only if the Writer was
// closed since Reserve and rec could not be spilled (ErrClosed), or if
// spilling fails (ErrOverloaded); a second use returns ErrTicketUsed.
func (t *Ticket) Log(rec Record) error {
	if t.used {
		return ErrTicketUsed
	}
	t.used = true
	w := t.w
	normalize(&rec, w.c.cfg.Now())
	encodeBody(&rec)
	w.mu.RLock()
	defer w.mu.RUnlock()
	if t.held {
		if !w.closed {
			w.in <- rec // never blocks: the ticket holds a unit of w.sem
			w.logged.Add(1)
			return nil
		}
		w.took()
	}
	if w.closed {
		return w.spillOrRefuse(&rec, ErrClosed)
	}
	return w.spillOrRefuse(&rec, ErrOverloaded)
}

// Cancel gives the room back unused. It does nothing after Log.
func (t *Ticket) Cancel() {
	if t == nil || t.used {
		return
	}
	t.used = true
	if t.held {
		t.w.took()
	}
}

// Stats returns the counters.
func (w *Writer) Stats() Stats {
	return Stats{
		Logged: w.logged.Load(), Written: w.written.Load(), Appends: w.appends.Load(), Blocked: w.blocked.Load(),
		Spilled: w.spilled.Load(), Replayed: w.replayed.Load(), Refused: w.refused.Load(),
		StoreErrors: w.storeErrors.Load(), SpillCorrupt: w.corrupt.Load(), Buffered: len(w.in),
	}
}

// Close stops accepting records and writes those buffered. If ctx ends
// first (the store is down), the rest are spilled to SpillDir, or, without
// one, reported lost in the returned error. Give ctx a deadline. Closing
// twice returns the first result.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		stopAbort := context.AfterFunc(ctx, w.cancel)
		defer stopAbort()
		close(w.stop)
		close(w.in)
	}
	w.mu.Unlock()
	<-w.done
	return w.closeErr
}

// run is the writer's goroutine: it batches records from the buffer (and
// from spill files when there is room) and appends them, retrying with
// backoff while the store fails.
func (w *Writer) run() {
	defer close(w.done)
	defer w.cancel()
	idle := time.NewTicker(w.opts.ReplayInterval)
	defer idle.Stop()
	var pending []*Record
	replay := w.nextReplay()
	backoff := time.Duration(0)
	for {
		select {
		case <-w.stop:
			w.finish(pending, replay)
			return
		default:
		}
		if len(pending) == 0 && replay == nil {
			select {
			case r, ok := <-w.in:
				if !ok {
					w.finish(nil, nil)
					return
				}
				w.took()
				pending = append(pending, &r)
			case <-idle.C:
				if replay = w.nextReplay(); replay == nil {
					continue
				}
			}
		}
		closing := false
		var linger *time.Timer
		if w.opts.FlushInterval > 0 && backoff == 0 && (replay == nil || replay.eof) {
			linger = time.NewTimer(w.opts.FlushInterval)
		}
		// Gathering never holds more than the buffer's size on top of it, so
		// that a store outage reaches the spill directory as soon as before.
		gather := min(w.opts.MaxBatch, max(cap(w.in), 1))
	fill:
		for len(pending) < w.opts.MaxBatch {
			select {
			case r, ok := <-w.in:
				if !ok {
					closing = true
					break fill
				}
				w.took()
				pending = append(pending, &r)
				continue
			default:
			}
			if linger == nil || len(pending) >= gather {
				break fill
			}
			// Wait for more records until the batch is full, the
			// interval ends or the writer is stopped.
			select {
			case r, ok := <-w.in:
				if !ok {
					closing = true
					break fill
				}
				w.took()
				pending = append(pending, &r)
			case <-linger.C:
				break fill
			case <-w.stop:
				break fill
			}
		}
		if linger != nil {
			linger.Stop()
		}
		if closing {
			w.finish(pending, replay)
			return
		}
		if replay != nil && !replay.eof && len(pending) < w.opts.MaxBatch {
			pending = append(pending, w.readReplay(replay, w.opts.MaxBatch-len(pending))...)
		}
		if len(pending) > 0 {
			var err error
			if pending, err = w.flush(pending); err != nil {
				backoff = min(max(backoff*2, w.opts.RetryMin), w.opts.RetryMax)
				select {
				case <-time.After(backoff):
				case <-w.stop:
				}
				continue
			}
			backoff = 0
		}
		if replay != nil && replay.eof && len(pending) == 0 {
			replay.done(w.log)
			replay = nil
		}
	}
}

// flush appends pending and returns what is left.
func (w *Writer) flush(pending []*Record) ([]*Record, error) {
	ctx, cancel := context.WithTimeout(w.abort, w.opts.WriteTimeout)
	defer cancel()
	rest, err := w.c.commit(ctx, pending)
	w.written.Add(uint64(len(pending) - len(rest)))
	if err == nil {
		w.appends.Add(1)
	}
	if err != nil {
		w.storeErrors.Add(1)
		w.c.warn("audit: cannot append to the chain; keeping the records and retrying", err)
	}
	return rest, err
}

// finish writes what is left at Close, until the Close context ends; then
// it spills the rest.
func (w *Writer) finish(pending []*Record, replay *replayer) {
	for r := range w.in {
		w.took()
		pending = append(pending, &r)
	}
	backoff := w.opts.RetryMin
	for len(pending) > 0 && w.abort.Err() == nil {
		n := min(len(pending), w.opts.MaxBatch)
		rest, err := w.flush(pending[:n])
		if err == nil {
			pending = pending[n:]
			continue
		}
		pending = append(append([]*Record(nil), rest...), pending[n:]...)
		select {
		case <-time.After(backoff):
		case <-w.abort.Done():
		}
		backoff = min(backoff*2, w.opts.RetryMax)
	}
	if replay != nil {
		if replay.eof && len(pending) == 0 {
			replay.done(w.log)
		} else {
			replay.close() // replayed again at the next start; stored records are skipped
		}
	}
	if len(pending) == 0 {
		w.closeSpill()
		return
	}
	if w.opts.SpillDir == "" {
		w.closeErr = fmt.Errorf("audit: %d records not written: store unavailable and no spill directory", len(pending))
	} else if err := w.spill(pending); err != nil {
		w.closeErr = fmt.Errorf("audit: %d records not written (store unavailable) and not spilled: %w", len(pending), err)
	} else {
		w.closeSpill()
		w.log.Warn("audit: store unavailable at shutdown; records spilled to disk for the next start",
			"records", len(pending), "dir", w.opts.SpillDir)
		return
	}
	w.log.Error("audit: records lost at shutdown", "records", len(pending), "err", w.closeErr)
}

const spillPrefix, spillSuffix = "audit-spill-", ".jsonl"

// spill appends recs to the current spill file, one JSON object a line.
// It does not fsync each time (that would make spilling, which happens under
// overload, slower than the store): the data survives a process crash, and
// Close and the replay's file rotation sync it.
func (w *Writer) spill(recs []*Record) error {
	var b strings.Builder
	for _, r := range recs {
		c := *r
		c.Seq, c.PrevHash, c.Hash = 0, "", "" // chain fields are recomputed on replay
		j, err := json.Marshal(&c)
		if err != nil {
			return err
		}
		b.Write(j)
		b.WriteByte('\n')
	}
	w.spillMu.Lock()
	defer w.spillMu.Unlock()
	if w.spillFile == nil {
		name := fmt.Sprintf("%s%020d-%d%s", spillPrefix, time.Now().UnixNano(), os.Getpid(), spillSuffix)
		f, err := os.OpenFile(filepath.Join(w.opts.SpillDir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		w.spillFile = f
	}
	if _, err := w.spillFile.WriteString(b.String()); err != nil {
		return err
	}
	w.spilled.Add(uint64(len(recs)))
	return nil
}

func (w *Writer) closeSpill() {
	w.spillMu.Lock()
	defer w.spillMu.Unlock()
	if w.spillFile != nil {
		_ = w.spillFile.Sync()
		_ = w.spillFile.Close()
		w.spillFile = nil
	}
}

// replayer reads one spill file back.
type replayer struct {
	path string
	f    *os.File
	r    *bufio.Reader
	line int
	eof  bool
	keep bool // a read error: do not delete the file
}

// nextReplay opens the oldest spill file, after closing the one being
// written so that new spills go to a new file. It returns nil when there is
// none.
func (w *Writer) nextReplay() *replayer {
	if w.opts.SpillDir == "" {
		return nil
	}
	w.spillMu.Lock()
	defer w.spillMu.Unlock()
	if w.spillFile != nil {
		_ = w.spillFile.Sync()
		_ = w.spillFile.Close()
		w.spillFile = nil
	}
	entries, err := os.ReadDir(w.opts.SpillDir)
	if err != nil {
		w.c.warn("audit: read spill directory", err)
		return nil
	}
	var names []string
	for _, e := range entries {
		if n := e.Name(); e.Type().IsRegular() && strings.HasPrefix(n, spillPrefix) && strings.HasSuffix(n, spillSuffix) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	path := filepath.Join(w.opts.SpillDir, names[0])
	f, err := os.Open(path)
	if err != nil {
		w.c.warn("audit: open spill file", err)
		return nil
	}
	w.log.Info("audit: replaying spilled records", "file", path)
	return &replayer{path: path, f: f, r: bufio.NewReaderSize(f, 64<<10)}
}

// readReplay reads up to n records from the spill file.
func (w *Writer) readReplay(rp *replayer, n int) []*Record {
	var out []*Record
	for len(out) < n && !rp.eof {
		line, err := rp.r.ReadBytes('\n')
		if len(line) > 0 {
			rp.line++
			var r Record
			if jerr := json.Unmarshal(line, &r); jerr != nil || r.EventID == "" {
				w.corrupt.Add(1)
				w.log.Error("audit: skipping an unreadable spilled record", "file", rp.path, "line", rp.line, "err", jerr)
			} else {
				out = append(out, &r)
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				// Keep the file: what could not be read is replayed next time.
				w.log.Error("audit: read spill file", "file", rp.path, "err", err)
				rp.keep = true
			}
			rp.eof = true
		}
	}
	w.replayed.Add(uint64(len(out)))
	return out
}

func (rp *replayer) close() { _ = rp.f.Close() }

// done removes a fully replayed file: all its records are in the chain.
func (rp *replayer) done(log *slog.Logger) {
	rp.close()
	if rp.keep {
		return
	}
	if err := os.Remove(rp.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Error("audit: remove replayed spill file", "file", rp.path, "err", err)
	}
}
