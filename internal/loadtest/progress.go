package loadtest

import (
	"fmt"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progressEvery is how often the progress bar is updated.
const progressEvery = 250 * time.Millisecond

// startProgress shows a progress bar on c.Progress until the returned
// function is called: requests done (of the planned total, when known),
// the current completion rate, errors, and p50/p99 so far (end-to-end in
// async mode, else the request latency).
func startProgress(c Config, r *runner) (stop func()) {
	if c.Progress == nil {
		return func() {}
	}
	total := int64(-1)
	switch {
	case !c.OpenLoop() && c.RequestsPerUser > 0:
		total = int64(c.Users) * int64(c.RequestsPerUser)
	case c.OpenLoop() && c.Rate > 0:
		total = max(int64(c.Rate*c.Duration.Seconds()), 1)
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(c.Progress),
		progressbar.OptionSetWidth(20),
		progressbar.OptionShowCount(),
		progressbar.OptionSetItsString("req"),
		progressbar.OptionThrottle(progressEvery/2),
		progressbar.OptionSetSpinnerChangeInterval(0), // no goroutine of its own
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(total > 0),
		progressbar.OptionSetDescription("loadtest"),
	)
	lastDone, lastAt := int64(0), time.Now()
	update := func() {
		ls := r.rec.live()
		sent, _ := r.gen.counts()
		now := time.Now()
		rate := float64(ls.done-lastDone) / now.Sub(lastAt).Seconds()
		lastDone, lastAt = ls.done, now
		bar.Describe(fmt.Sprintf("sent %d · %s req/s · errors %d · p50 %s · p99 %s",
			sent, fmtFloat(rate), ls.errors, fmtDur(ls.p50), fmtDur(ls.p99)))
		if total > 0 && ls.done > bar.GetMax64() {
			bar.ChangeMax64(ls.done)
		}
		_ = bar.Set64(ls.done)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				update()
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		update()
		if total > 0 {
			bar.ChangeMax64(max(lastDone, 1))
		}
		_ = bar.Finish()
		_, _ = fmt.Fprintln(c.Progress)
	}
}
