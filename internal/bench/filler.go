package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/claudeq/claudeq/internal/job"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claudeq/claudeq/internal/apikey"
	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/cache"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/queue"
	"github.com/claudeq/claudeq/internal/quota"
	"github.com/claudeq/claudeq/internal/store"
)

// DirectFiller queues jobs the way the api does once a request is
// accepted — quota.Reserve of the job's estimate, then queue.Submit of
// its state and task — through a running app's own Queue and Quota, in
// this process, without HTTP, authentication, validation or the audit
// record. It exists to build backlogs of 100,000s of jobs in seconds; S3
// checks that it leaves the same bytes per job in Redis as the api.
type DirectFiller struct {
	a     *app.App
	proto job.Payload
	users []User
	opts  []asynq.Option
	ttl   time.Duration
	model string
}

// User is an API key of the bench and its owner.
type User struct {
	Key, KeyID, UserID, Department string
}

// ApiJobStateTTL is the api's default lifetime of a queued job's state
// (api.Options.JobStateTTL), which the app does not change.
const ApiJobStateTTL = 7 * 24 * time.Hour

// promptMark is the number ProbePayload submits with; the filler
// replaces it with each job's own 7-digit number, so that every job has
// a distinct request of the same size as the api's.
const promptMark = "Benchmark request 1000000:"

// NewDirectFiller returns a filler over a's Queue and Quota that queues
// copies of probe (a task payload the api queued, from ProbePayload)
// for users in turn (nil: the probe's own user).
func NewDirectFiller(a *app.App, cfg config.Config, probe []byte, users []User) (*DirectFiller, error) {
	f := &DirectFiller{a: a, users: users, ttl: ApiJobStateTTL}
	if err := json.Unmarshal(probe, &f.proto); err != nil {
		return nil, fmt.Errorf("probe payload: %w", err)
	}
	var req struct {
		Model string `json:"model"`
	}
	if err := json.Unmarshal(f.proto.Request, &req); err != nil {
		return nil, fmt.Errorf("probe payload's request: %w", err)
	}
	f.model = req.Model
	if !bytes.Contains(f.proto.Request, []byte(promptMark)) {
		return nil, fmt.Errorf("probe payload: no %q in its request", promptMark)
	}
	if len(f.users) == 0 {
		f.users = []User{{KeyID: f.proto.KeyID, UserID: f.proto.UserID, Department: f.proto.Department}}
	}
	f.opts = []asynq.Option{job.MaxRetry(cfg.JobMaxRetries), asynq.Timeout(cfg.JobTimeout)}
	return f, nil
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Submit queues job number i (from 1).
func (f *DirectFiller) Submit(ctx context.Context, i int64) error {
	u := f.users[int(i)%len(f.users)]
	p := f.proto
	idb := make([]byte, 15)
	_, _ = rand.Read(idb)
	p.ID = "job_" + strings.ToLower(b32.EncodeToString(idb))
	p.UserID, p.KeyID, p.Department = u.UserID, u.KeyID, u.Department
	p.Request = bytes.Replace(p.Request, []byte(promptMark), fmt.Appendf(nil, "Benchmark request %07d:", 1_000_000+i%9_000_000), 1)
	h := sha256.Sum256(p.Request)
	p.RequestHash = hex.EncodeToString(h[:])
	if p.CacheKey != "" {
		p.CacheKey = cache.Key(p.UserID, p.Request)
	}
	p.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)
	if q := f.a.Money.Quota; q != nil {
		if err := q.Reserve(ctx, quota.Reservation{JobID: p.ID, UserID: p.UserID, Department: p.Department, Amount: claudeq.Micros(p.EstimateMicros)}); err != nil {
			return err
		}
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	_, err = f.a.Queue.Submit(ctx, queue.Submission{
		State:   queue.State{ID: p.ID, UserID: p.UserID, Kind: p.Kind, Model: f.model, RequestHash: p.RequestHash, CreatedAt: p.CreatedAt},
		Payload: b, TTL: f.ttl, Options: f.opts,
	})
	return err
}

// Fill queues jobs from+1 … from+n, conc at a time, and stops early when
// by (if not zero) has passed; it returns how many it queued.
func (f *DirectFiller) Fill(ctx context.Context, conc int, from, n int64, by time.Time) (int64, error) {
	var done atomic.Int64
	err := Drive(ctx, conc, int(n), func(ctx context.Context, i int64) error {
		if !by.IsZero() && time.Now().After(by) {
			return errBudget
		}
		if err := f.Submit(ctx, from+i); err != nil {
			return err
		}
		done.Add(1)
		return nil
	})
	if errors.Is(err, errBudget) {
		err = nil
	}
	return done.Load(), err
}

var errBudget = errors.New("fill budget spent")

// AddUsers creates n API keys of distinct users in database db (in
// departments of ten users each) and returns them; the env's own key is
// not among them.
func (e *Env) AddUsers(ctx context.Context, db string, n int) ([]User, error) {
	d, off, err := store.Connect(ctx, e.Mongo, db)
	if err != nil {
		return nil, err
	}
	defer func() { _ = off(context.WithoutCancel(ctx)) }()
	st := store.New(d)
	out := make([]User, n)
	for i := range n {
		key, id := apikey.New()
		u := User{Key: key, KeyID: id, UserID: fmt.Sprintf("bench-u%d", i), Department: fmt.Sprintf("bench-d%d", i/10)}
		if err := st.CreateKey(ctx, store.APIKey{ID: id, Hash: apikey.Hash(key), Prefix: key[:8], UserID: u.UserID,
			Department: u.Department, Tier: "standard", Scopes: []string{claudeq.ScopeJobs}, CreatedAt: time.Now().UTC()}); err != nil {
			return nil, err
		}
		out[i] = u
	}
	return out, nil
}
