package webhook_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"time"

	"github.com/claudeq/claudeq/pkg/webhook"
)

// ExampleVerifier shows a receiver: an http.Handler that accepts a claudeq
// webhook only when its signature verifies, and drops duplicates by
// webhook-id (delivery is at least once).
func ExampleVerifier() {
	// The secret (whsec_…) is the one claudeq signs your webhooks with.
	// During a rotation, pass both the old and the new one.
	secret := webhook.NewSecret() // in real code: os.Getenv("CLAUDEQ_WEBHOOK_SECRET")
	v, err := webhook.NewVerifier(secret)
	if err != nil {
		log.Fatal(err)
	}

	seen := map[string]bool{} // use a shared store in real code
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if err := v.Verify(r.Header, body); err != nil {
			// errors.Is(err, webhook.ErrTimestamp) etc. tell why.
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		id := r.Header.Get(webhook.HeaderID)
		if seen[id] {
			w.WriteHeader(http.StatusNoContent) // already handled: acknowledge
			return
		}
		seen[id] = true
		// ... handle the event in body: {"type":"job.succeeded","timestamp":…,"data":{…}}
		w.WriteHeader(http.StatusNoContent)
	})

	// What claudeq sends (built here by hand to show the headers).
	body := []byte(`{"type":"job.succeeded","timestamp":"2026-11-03T12:00:00Z","data":{"job_id":"job_1"}}`)
	now := time.Now()
	sig, _ := webhook.Sign(secret, "msg_1", now, body)
	send := func(body []byte, sig string) int {
		r := httptest.NewRequest(http.MethodPost, "/hooks/claudeq", bytes.NewReader(body))
		r.Header.Set(webhook.HeaderID, "msg_1")
		r.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
		r.Header.Set(webhook.HeaderSignature, sig)
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		return w.Code
	}
	fmt.Println("signed:", send(body, sig))
	fmt.Println("tampered:", send(append(body, ' '), sig))
	fmt.Println("retry of the same event:", send(body, sig))
	fmt.Println(errors.Is(v.Verify(http.Header{}, body), webhook.ErrMissingHeaders))
	// Output:
	// signed: 204
	// tampered: 401
	// retry of the same event: 204
	// true
}
