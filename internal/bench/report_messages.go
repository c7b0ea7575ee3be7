package bench

import (
	"fmt"
	"strings"
	"time"
)

// us formats a duration in microseconds with one decimal, for the small
// differences of figure 7.
func us(d time.Duration) string {
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

// renderMessagesSummary adds figure 7's rows to the summary table and its
// missed targets to misses.
func renderMessagesSummary(p printer, r *Report, misses []string) []string {
	m := r.Messages
	if m == nil || len(m.C1[MsgDirect]) == 0 {
		return misses
	}
	for _, t := range []int{MsgOn, MsgOff} {
		c1, _, p99, oneCore := m.Added(t)
		target := MsgAddedP50On
		if t == MsgOff {
			target = MsgAddedP50Off
		}
		name := MsgTargetNames[t]
		ok := c1 <= target
		p("| 7. POST /v1/messages added p50, 1 client, %s | %s | %s (simulator directly) | — | ≤ %s | %s |", name, us(c1), us(time.Duration(Median(durs(c1P50(m.C1[MsgDirect]))))), us(target), verdict(ok))
		if !ok {
			misses = append(misses, fmt.Sprintf("Figure 7, %s: the gateway adds %s at p50 with one client; the target is ≤ %s.", name, us(c1), us(target)))
		}
		ok = p99 <= MsgAddedP99
		p("| 7. POST /v1/messages added p99, %s/s open loop, %s | %s | %s (simulator directly) | — | ≤ %s | %s |", num(m.Rate), name, us(p99), us(time.Duration(Median(durs(openP(m.Open[MsgDirect], true))))), us(MsgAddedP99), verdict(ok))
		if !ok {
			misses = append(misses, fmt.Sprintf("Figure 7, %s: the gateway adds %s at p99 at %s requests/s; the target is ≤ %s.", name, us(p99), num(m.Rate), us(MsgAddedP99)))
		}
		ok = oneCore >= MsgMaxRatio
		p("| 7. POST /v1/messages max req/s on one core, %s | %s req/s | %s req/s (simulator alone) | %s× (from CPU time: %s×) | ≥ %s× | %s |", name,
			num(Median(rps(m.Max[t]))), num(Median(rps(m.Max[MsgDirect]))), rx(oneCore), rx(m.CPURatio(t)), rx(MsgMaxRatio), verdict(ok))
		if !ok {
			misses = append(misses, fmt.Sprintf("Figure 7, %s: gateway and simulator on one core serve %s requests/s, %s× the simulator alone (%s); the target is ≥ %s×.",
				name, num(Median(rps(m.Max[t]))), rx(oneCore), num(Median(rps(m.Max[MsgDirect]))), rx(MsgMaxRatio)))
		}
	}
	return misses
}

func durs(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d)
	}
	return out
}

// renderMessages writes figure 7's section.
func renderMessages(p printer, r *Report) {
	m := r.Messages
	if m == nil || len(m.C1[MsgDirect]) == 0 {
		return
	}
	o := r.Options
	p("## 7. Anthropic-compatible API: POST /v1/messages")
	p("")
	p("Non-streaming `POST /v1/messages` (a %d-byte body: claude-haiku-5-5, max_tokens 64, a distinct prompt per request; response cache off, `CLAUDEQ_CACHE_TTL=0s`) sent to the simulator directly, and through the gateway in front of the same simulator. **On** is the api role exactly as `cmd/api` runs it: key check (cached), content policy (redact), worst-case estimate and budget reservation in Redis, the fleet (node choice, admission and outcome in Redis), the audit record, and after the answer the ledger entry (group commit to FerretDB) and the settlement. **Off** is the same handler with authentication, content policy, pricing, budgets, ledger and audit off: only the fleet's node choice and its shared accounting remain (`gatewayOff` in internal/bench/child.go). The simulator and each gateway are processes of their own (the bench binary started again with `CLAUDEQ_BENCH_CHILD`); the load generators run in the bench process. In the latency runs (one client, and the open loop) the gateway's store (FerretDB: API keys, ledger, audit log) is a process of its own too, at idle CPU priority (`%s`, which any other task preempts at once): a store whose CPU does not delay the gateway, Redis or the load generator, as MongoDB on a machine of its own would not; in the one-core runs it is the embedded FerretDB in the bench process, on the other CPU. Added latency = the gateway's figure minus the simulator's, paired by repetition, median over %d repetition(s).", m.BodyBytes, strings.Join(idlePriority(), " "), o.Reps)
	p("")
	p("| | added p50, 1 client | added p50, %s/s | added p99, %s/s | one core: req/s | ÷ simulator alone | ÷ simulator alone, from CPU time |", num(m.Rate), num(m.Rate))
	p("|---|---:|---:|---:|---:|---:|---:|")
	for _, t := range []int{MsgOn, MsgOff, MsgProxy} {
		c1, p50, p99, oneCore := m.Added(t)
		p("| %s | **%s** | %s | **%s** | %s | **%s×** | %s× |", MsgTargetNames[t], us(c1), us(p50), us(p99), num(Median(rps(m.Max[t]))), rx(oneCore), rx(m.CPURatio(t)))
	}
	p("| targets | ≤ %s on, ≤ %s off | | ≤ %s | | ≥ %s× | |", us(MsgAddedP50On), us(MsgAddedP50Off), us(MsgAddedP99), rx(MsgMaxRatio))
	p("")
	p("The last column divides the simulator's CPU time per request when it is alone on the core by the gateway's and the simulator's together when they share it: the ratio the core alone would allow. The measured ratio before it is lower when something off the core (the load generator, FerretDB and redis-server on the other CPU) cannot keep up; the CPU columns below show who used what.")
	p("")
	p("**Concurrency 1** (closed loop, one client, %v windows after %v warm-ups; processes not pinned):", o.Duration, o.Warmup)
	p("")
	p("| rep | target | req/s | p50 | p99 | CPU µs/req: gateway / simulator / bench process (load generator, FerretDB) / redis-server | Redis commands/req (inside scripts included) |")
	p("|---:|---|---:|---:|---:|---|---|")
	for t := range msgTargets {
		for i, x := range m.C1[t] {
			p("| %d | %s | %s | %s | %s | %s | %s |", i+1, MsgTargetNames[t], num(x.RPS), us(x.P50), us(x.P99), cpuCols(m.C1CPU[t], i), x.Use.PerOp(x.OK))
		}
	}
	p("")
	p("**Open loop at %s requests/s** (vegeta, constant pacing, keep-alive, %v per run; processes not pinned):", num(m.Rate), o.LatencyDuration)
	p("")
	p("| rep | target | sent | sent/s | ok | p50 | p99 | max |")
	p("|---:|---|---:|---:|---:|---:|---:|---:|")
	for t := range msgTargets {
		for i, x := range m.Open[t] {
			p("| %d | %s | %d | %s | %d | %s | %s | %v |", i+1, MsgTargetNames[t], x.Sent, num(x.Achieved), x.OK, us(x.P50), us(x.P99), ms(x.Max))
		}
	}
	p("")
	p("**Most requests/s on one core**: %s; closed loop, %v windows after %v warm-ups.", m.Pinning, o.Duration, o.Warmup)
	p("")
	p("| rep | target | req/s | p50 | p99 | errors | CPU µs/req: gateway / simulator / bench process / redis-server |")
	p("|---:|---|---:|---:|---:|---:|---|")
	names := [msgTargets]string{"simulator alone", "gateway on + simulator", "gateway off + simulator", "bare proxy + simulator"}
	for t := range msgTargets {
		for i, x := range m.Max[t] {
			p("| %d | %s | %s | %v | %v | %d | %s |", i+1, names[t], num(x.RPS), ms(x.P50), ms(x.P99), x.Errors, cpuCols(m.MaxCPU[t], i))
		}
	}
	p("")
	for t := range msgTargets {
		for _, x := range m.C1[t] {
			if x.Errors > 0 {
				p("Some requests to %s failed; the first error: `%s`.", MsgTargetNames[t], x.FirstErr)
				p("")
				break
			}
		}
	}
	if pr := m.Profile; pr != nil {
		p("**Where the gateway's time goes**: %s. A CPU profile of the gateway process alone (not the simulator or the load generator, which are other processes), %s of CPU sampled over %s; a sample counts for every part on its stack, so the parts overlap (the `·` rows are inside the row above them).",
			pr.Title, pr.CPU.Round(10*time.Millisecond), pr.Duration.Round(10*time.Millisecond))
		p("")
		p("| part | share of the gateway's CPU |")
		p("|---|---:|")
		for _, s := range pr.Stages {
			p("| %s | %s |", s.Name, pct(s.Share))
		}
		p("")
		p("<details><summary>Top functions by own time</summary>")
		p("")
		p("| function | own | with callees |")
		p("|---|---:|---:|")
		for _, f := range pr.Top {
			p("| `%s` | %s | %s |", f.Name, pct(f.Flat), pct(f.Cum))
		}
		p("")
		p("</details>")
		p("")
	}
	p("Rerun just this figure: `go run ./scripts/bench -only messages -out /tmp/messages.md` (flags `-messages-rate`, `-messages-clients`, `-reps`, `-duration`, `-latency-duration`).")
	p("")
}

// cpuCols formats the i-th ProcCPU of cs.
func cpuCols(cs []ProcCPU, i int) string {
	if i >= len(cs) {
		return ""
	}
	c := cs[i]
	f := func(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/float64(time.Microsecond)) }
	g := "—"
	if c.Gateway > 0 {
		g = f(c.Gateway)
	}
	return g + " / " + f(c.Sim) + " / " + f(c.Bench) + " / " + f(c.Redis)
}
