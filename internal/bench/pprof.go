package bench

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// The CPU profiles are read with a minimal decoder of the pprof format
// (gzipped protocol buffers, github.com/google/pprof/proto/profile.proto):
// only samples, locations, functions and the string table, which is all a
// summary needs, without a dependency.

// Stage is a named part of the work, for the summary of a profile: a
// sample counts for it when some frame of its stack starts with one of
// Match and none starts with one of Except.
type Stage struct {
	Name          string
	Match, Except []string
}

// StageShare is a stage's share of a profile's CPU time.
type StageShare struct {
	Name  string
	Share float64 // 0–1
}

// FuncShare is one function's flat (own) and cumulative shares.
type FuncShare struct {
	Name      string
	Flat, Cum float64
}

// ProfileSummary says where a profiled run's CPU time went.
type ProfileSummary struct {
	Title    string
	Path     string
	Duration time.Duration // wall time profiled
	CPU      time.Duration // CPU time sampled
	Stages   []StageShare
	Top      []FuncShare // by flat share
}

// SubmitStages are the parts of a submit window (figure 1): the api's
// HTTP server with its handler, broken down; the work the api leaves to
// background goroutines; and the bench's own share.
var SubmitStages = []Stage{
	{Name: "api: HTTP server goroutines", Match: []string{"net/http.(*conn).serve"}},
	{Name: "· net/http outside the router (reading requests, writing responses)", Match: []string{"net/http.(*conn).serve"},
		Except: []string{"github.com/labstack/echo/v4.(*Echo).ServeHTTP"}},
	{Name: "· middleware around the chat handler (metrics, security headers, request id, limiters, auth, audit record)", Match: []string{"github.com/labstack/echo/v4.(*Echo).ServeHTTP"},
		Except: []string{"github.com/claudeq/claudeq/internal/api.(*Server).chat"}},
	{Name: "·· API-key check (cached)", Match: []string{"github.com/claudeq/claudeq/internal/api.(*Server).lookup", "github.com/claudeq/claudeq/internal/api.credential"}},
	{Name: "· chat handler", Match: []string{"github.com/claudeq/claudeq/internal/api.(*Server).chat"}},
	{Name: "·· request parsing and validation", Match: []string{"github.com/claudeq/claudeq/internal/api.(*Server).parseChat"}},
	{Name: "·· content policy (sensitive-data scan)", Match: []string{"github.com/claudeq/claudeq/internal/api.(*Server).applyPolicy", "github.com/claudeq/claudeq/internal/policy."}},
	{Name: "·· response-cache lookup (cache.Get)", Match: []string{"github.com/claudeq/claudeq/internal/cache.(*Cache).Get"}},
	{Name: "·· worst-case cost estimate (token heuristic, prices)", Match: []string{"github.com/claudeq/claudeq/internal/api.(*Server).estimate"}},
	{Name: "·· budget reservation (quota.Reserve)", Match: []string{"github.com/claudeq/claudeq/internal/quota.(*Quota).Reserve"}},
	{Name: "·· state hash and enqueue (queue.Submit)", Match: []string{"github.com/claudeq/claudeq/internal/queue.(*Queue).Submit"}},
	{Name: "audit log: hash chain and batched inserts (audit.Writer, client side)", Match: []string{"github.com/claudeq/claudeq/internal/audit."},
		Except: []string{"net/http.(*conn).serve"}},
	{Name: "FerretDB with SQLite (in this process; MongoDB's server in production)", Match: []string{"github.com/FerretDB/"}},
	{Name: "all Redis round trips (go-redis, any caller)", Match: []string{"github.com/redis/go-redis/v9."}},
	{Name: "load generator (the bench's HTTP client)", Match: []string{"github.com/claudeq/claudeq/internal/bench.", "net/http.(*persistConn)."}},
	{Name: "garbage collector (background marking)", Match: []string{"runtime.gcBgMarkWorker"}},
}

// E2EStages are the parts of a drain (figure 2).
var E2EStages = []Stage{
	{Name: "worker: job handler (task.JobHandler)", Match: []string{"github.com/claudeq/claudeq/internal/task.(*JobHandler)."}},
	{Name: "· upstream call through the fleet (Fleet.Call)", Match: []string{"github.com/claudeq/claudeq/internal/upstream.(*Fleet).Call"}},
	{Name: "·· node choice (Fleet.pick)", Match: []string{"github.com/claudeq/claudeq/internal/upstream.(*Fleet).pick"}},
	{Name: "·· shared node accounting (admit and finish scripts)", Match: []string{"github.com/claudeq/claudeq/internal/upstream.(*Fleet).admit", "github.com/claudeq/claudeq/internal/upstream.(*Fleet).finish"}},
	{Name: "· billing and budget settlement (price, hold, settle)", Match: []string{"github.com/claudeq/claudeq/internal/task.(*JobHandler).bill", "github.com/claudeq/claudeq/internal/task.(*JobHandler).settle"}},
	{Name: "· job state in Redis (queue.Queue)", Match: []string{"github.com/claudeq/claudeq/internal/queue.(*Queue)."}},
	{Name: "· answer cached (cache.Put)", Match: []string{"github.com/claudeq/claudeq/internal/cache.(*Cache).Put"}},
	{Name: "asynq: fetching, leases, completion (outside the handler)", Match: []string{"github.com/hibiken/asynq."},
		Except: []string{"github.com/claudeq/claudeq/internal/task.(*JobHandler)."}},
	{Name: "store: batched job and ledger writes (Committer, client side)", Match: []string{"github.com/claudeq/claudeq/internal/store.(*Committer)."}},
	{Name: "FerretDB with SQLite (in this process; MongoDB's server in production)", Match: []string{"github.com/FerretDB/"}},
	{Name: "simulated upstream: its HTTP server (in this process)", Match: []string{"net/http.(*conn).serve"}},
	{Name: "upstream HTTP client transport (connection loops)", Match: []string{"net/http.(*persistConn)."}},
	{Name: "all Redis round trips (go-redis, any caller)", Match: []string{"github.com/redis/go-redis/v9."}},
	{Name: "bench: drain poll every 2 ms", Match: []string{"github.com/claudeq/claudeq/internal/bench."}},
	{Name: "garbage collector (background marking)", Match: []string{"runtime.gcBgMarkWorker"}},
}

// SummarizeProfile reads the CPU profile at path and returns the share of
// each stage and the top functions by their own time.
func SummarizeProfile(path, title string, stages []Stage) (ProfileSummary, error) {
	p, err := readProfile(path)
	if err != nil {
		return ProfileSummary{}, fmt.Errorf("profile %s: %w", path, err)
	}
	s := ProfileSummary{Title: title, Path: path, Duration: time.Duration(p.duration)}
	var total int64
	stageV := make([]int64, len(stages))
	flat, cum := map[string]int64{}, map[string]int64{}
	for _, smp := range p.samples {
		v := smp.value
		total += v
		var names []string // innermost first
		for _, id := range smp.locs {
			names = append(names, p.locs[id]...)
		}
		if len(names) > 0 {
			flat[names[0]] += v
		}
		seen := map[string]bool{}
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				cum[n] += v
			}
		}
		for i, st := range stages {
			if anyPrefix(names, st.Match) && !anyPrefix(names, st.Except) {
				stageV[i] += v
			}
		}
	}
	s.CPU = time.Duration(total)
	if total == 0 {
		return s, nil
	}
	for i, st := range stages {
		s.Stages = append(s.Stages, StageShare{Name: st.Name, Share: float64(stageV[i]) / float64(total)})
	}
	for n, v := range flat {
		s.Top = append(s.Top, FuncShare{Name: n, Flat: float64(v) / float64(total), Cum: float64(cum[n]) / float64(total)})
	}
	slices.SortFunc(s.Top, func(a, b FuncShare) int {
		if c := cmp.Compare(b.Flat, a.Flat); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	s.Top = s.Top[:min(len(s.Top), 12)]
	return s, nil
}

func anyPrefix(names, prefixes []string) bool {
	for _, n := range names {
		for _, p := range prefixes {
			if strings.HasPrefix(n, p) {
				return true
			}
		}
	}
	return false
}

type profSample struct {
	locs  []uint64
	value int64 // of the last sample type: CPU nanoseconds in a CPU profile
}

type profData struct {
	samples  []profSample
	locs     map[uint64][]string // location → function names, innermost (inlined) first
	duration int64
}

// readProfile decodes a (gzipped) pprof profile.
func readProfile(path string) (*profData, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(raw) >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		if raw, err = io.ReadAll(zr); err != nil {
			return nil, err
		}
	}
	var (
		strs     []string
		funcs    = map[uint64]int64{} // function id → name's string index
		locFuncs = map[uint64][]uint64{}
		samples  []profSample
		duration int64
	)
	err = pbFields(raw, func(field int, wire int, v uint64, b []byte) error {
		switch field {
		case 2: // sample
			var smp profSample
			var values []int64
			err := pbFields(b, func(f, w int, v uint64, b []byte) error {
				switch f {
				case 1:
					return pbUints(w, v, b, func(x uint64) { smp.locs = append(smp.locs, x) })
				case 2:
					return pbUints(w, v, b, func(x uint64) { values = append(values, int64(x)) })
				}
				return nil
			})
			if err != nil {
				return err
			}
			if len(values) > 0 {
				smp.value = values[len(values)-1]
			}
			samples = append(samples, smp)
		case 4: // location
			var id uint64
			var fns []uint64
			err := pbFields(b, func(f, w int, v uint64, b []byte) error {
				switch f {
				case 1:
					id = v
				case 4: // line
					return pbFields(b, func(f, w int, v uint64, _ []byte) error {
						if f == 1 {
							fns = append(fns, v)
						}
						return nil
					})
				}
				return nil
			})
			if err != nil {
				return err
			}
			locFuncs[id] = fns
		case 5: // function
			var id uint64
			var name int64
			err := pbFields(b, func(f, w int, v uint64, _ []byte) error {
				switch f {
				case 1:
					id = v
				case 2:
					name = int64(v)
				}
				return nil
			})
			if err != nil {
				return err
			}
			funcs[id] = name
		case 6: // string table
			strs = append(strs, string(b))
		case 10: // duration_nanos
			duration = int64(v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	p := &profData{samples: samples, locs: map[uint64][]string{}, duration: duration}
	for id, fns := range locFuncs {
		for _, f := range fns {
			if i, ok := funcs[f]; ok && i >= 0 && int(i) < len(strs) {
				p.locs[id] = append(p.locs[id], strs[i])
			}
		}
	}
	return p, nil
}

// pbFields calls fn for every field of the protocol-buffer message b: its
// number, wire type, value (varint and fixed types) or bytes (length-
// delimited).
func pbFields(b []byte, fn func(field, wire int, v uint64, b []byte) error) error {
	for len(b) > 0 {
		key, n := pbVarint(b)
		if n <= 0 {
			return errors.New("bad field key")
		}
		b = b[n:]
		field, wire := int(key>>3), int(key&7)
		var v uint64
		var data []byte
		switch wire {
		case 0:
			v, n = pbVarint(b)
			if n <= 0 {
				return errors.New("bad varint")
			}
			b = b[n:]
		case 1:
			if len(b) < 8 {
				return errors.New("short fixed64")
			}
			b = b[8:]
		case 2:
			l, n := pbVarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return errors.New("bad length")
			}
			data, b = b[n:n+int(l)], b[n+int(l):]
		case 5:
			if len(b) < 4 {
				return errors.New("short fixed32")
			}
			b = b[4:]
		default:
			return fmt.Errorf("wire type %d", wire)
		}
		if err := fn(field, wire, v, data); err != nil {
			return err
		}
	}
	return nil
}

// pbUints reads a repeated varint field, packed (wire type 2) or not.
func pbUints(wire int, v uint64, b []byte, add func(uint64)) error {
	if wire == 0 {
		add(v)
		return nil
	}
	for len(b) > 0 {
		x, n := pbVarint(b)
		if n <= 0 {
			return errors.New("bad packed varint")
		}
		add(x)
		b = b[n:]
	}
	return nil
}

func pbVarint(b []byte) (uint64, int) {
	var x uint64
	for i := 0; i < len(b) && i < 10; i++ {
		x |= uint64(b[i]&0x7f) << (7 * i)
		if b[i] < 0x80 {
			return x, i + 1
		}
	}
	return 0, 0
}
