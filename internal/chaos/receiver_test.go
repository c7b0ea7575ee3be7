//go:build chaos

package chaos

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/claudeq/claudeq/internal/testport"
)

// receiver is a webhook endpoint on loopback that records every delivery
// and can be taken down (its port refuses connections) and brought back on
// the same port.
type receiver struct {
	t    *testing.T
	addr string

	mu         sync.Mutex
	srv        *http.Server
	byID       map[string]delivery // webhook-id → first delivery
	deliveries int                 // all deliveries, duplicates included
	downSince  time.Time
}

// delivery is one event as received.
type delivery struct {
	WebhookID string
	Type      string
	JobID     string
	Status    string
	At        time.Time
}

func newReceiver(t *testing.T) *receiver {
	// Its port must survive Down and Up: testport's, below the ephemeral
	// range.
	r := &receiver{t: t, byID: map[string]delivery{}, addr: testport.Addr(t)}
	r.serve(testport.Listen(t, r.addr))
	t.Cleanup(r.Down)
	return r
}

// URL is the webhook_url jobs carry.
func (r *receiver) URL() string { return "http://" + r.addr + "/hook" }

func (r *receiver) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(r.handle), ReadHeaderTimeout: 5 * time.Second}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.t.Logf("webhook receiver: %v", err)
		}
	}()
}

func (r *receiver) handle(w http.ResponseWriter, req *http.Request) {
	b, err := io.ReadAll(req.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var ev struct {
		Type string `json:"type"`
		Data struct {
			JobID  string `json:"job_id"`
			Status string `json:"status"`
		} `json:"data"`
	}
	id := req.Header.Get("webhook-id")
	if json.Unmarshal(b, &ev) != nil || id == "" || req.Header.Get("webhook-signature") == "" {
		r.t.Errorf("webhook receiver: malformed delivery (webhook-id %q): %s", id, b)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.deliveries++
	if _, seen := r.byID[id]; !seen {
		r.byID[id] = delivery{WebhookID: id, Type: ev.Type, JobID: ev.Data.JobID, Status: ev.Data.Status, At: time.Now()}
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// Down closes the port: deliveries get "connection refused".
func (r *receiver) Down() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	if srv != nil {
		r.downSince = time.Now()
	}
	r.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Up listens on the same port again.
func (r *receiver) Up() {
	r.t.Helper()
	r.serve(testport.Listen(r.t, r.addr))
}

// events returns the de-duplicated events by job id, and the number of
// deliveries (duplicates included).
func (r *receiver) events() (map[string][]delivery, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]delivery{}
	for _, d := range r.byID {
		out[d.JobID] = append(out[d.JobID], d)
	}
	return out, r.deliveries
}
