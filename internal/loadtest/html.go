package loadtest

import (
	"bytes"
	"fmt"
	"html"
	"html/template"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// WriteHTML writes a self-contained HTML report: tables, a latency-over-time
// plot, a requests-over-time plot and a histogram of every latency, as
// inline SVG. It loads nothing from anywhere (no scripts, styles, fonts or
// images from outside the file).
func (r *Report) WriteHTML(w io.Writer) error {
	type row struct{ K, V string }
	type latRow struct {
		Name                          string
		Count                         int64
		P50, P90, P95, P99, P999, Max string
	}
	type hist struct {
		Name string
		SVG  template.HTML
	}
	var raw bytes.Buffer
	if err := r.WriteJSON(&raw); err != nil {
		return err
	}
	data := struct {
		Title                 string
		Meta                  string
		Overview              []row
		Latency               []latRow
		Errors, Status, Polls []row
		TimeSVG, RateSVG      template.HTML
		Hists                 []hist
		Note                  string
		JSON                  string
	}{Title: r.Title(), JSON: raw.String()}
	data.Meta = fmt.Sprintf("started %s · GOMAXPROCS %d of the generator", r.Started.Format(time.RFC3339), r.GOMAXPROCS)
	for _, o := range r.overview() {
		data.Overview = append(data.Overview, row{o[0], o[1]})
	}
	for _, n := range r.summaries() {
		s := n.S
		data.Latency = append(data.Latency, latRow{n.Name, s.Count, fmtDur(s.P50), fmtDur(s.P90), fmtDur(s.P95), fmtDur(s.P99), fmtDur(s.P999), fmtDur(s.Max)})
		data.Hists = append(data.Hists, hist{n.Name, template.HTML(histogramSVG(s.Bins))}) //nolint:gosec // built from numbers and escaped text
	}
	for _, kv := range sortedCounts(r.ErrorTypes) {
		data.Errors = append(data.Errors, row{kv.k, strconv.FormatInt(kv.n, 10)})
	}
	for _, c := range slices.Sorted(maps.Keys(r.StatusCodes)) {
		data.Status = append(data.Status, row{strconv.Itoa(c), strconv.FormatInt(r.StatusCodes[c], 10)})
	}
	for _, kv := range sortedCounts(r.PollErrors) {
		data.Polls = append(data.Polls, row{kv.k, strconv.FormatInt(kv.n, 10)})
	}
	data.TimeSVG = template.HTML(r.latencyOverTimeSVG())  //nolint:gosec // as above
	data.RateSVG = template.HTML(r.requestsOverTimeSVG()) //nolint:gosec // as above
	if r.Loop == "open" && r.Rate > 0 {
		data.Note = "Latencies are measured from each request's intended send time (no coordinated omission)."
	}
	return pageTmpl.Execute(w, data)
}

var pageTmpl = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1000px;padding:0 1em;color:#1d2330}
h1{font-size:1.35em}h2{font-size:1.1em;margin-top:2em}h3{font-size:1em;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #d5d9e0;padding:.25em .6em;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f2f4f7}
.meta,.note{color:#5b6475}svg{display:block;max-width:100%;height:auto;background:#fff}
svg text{font:11px system-ui,sans-serif;fill:#3a4150}pre{background:#f6f7f9;padding:1em;overflow:auto;font-size:12px}
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p class="meta">{{.Meta}}</p>
<table>{{range .Overview}}<tr><th>{{.K}}</th><td>{{.V}}</td></tr>{{end}}</table>
{{if .Latency}}<h2>Latency</h2>
<table><tr><th></th><th class="n">count</th><th class="n">p50</th><th class="n">p90</th><th class="n">p95</th><th class="n">p99</th><th class="n">p99.9</th><th class="n">max</th></tr>
{{range .Latency}}<tr><th>{{.Name}}</th><td class="n">{{.Count}}</td><td class="n">{{.P50}}</td><td class="n">{{.P90}}</td><td class="n">{{.P95}}</td><td class="n">{{.P99}}</td><td class="n">{{.P999}}</td><td class="n">{{.Max}}</td></tr>
{{end}}</table>{{end}}
{{if .Note}}<p class="note">{{.Note}}</p>{{end}}
{{if .Errors}}<h2>Errors</h2><table><tr><th>type</th><th class="n">count</th></tr>{{range .Errors}}<tr><td>{{.K}}</td><td class="n">{{.V}}</td></tr>{{end}}</table>{{end}}
{{if .Status}}<h2>HTTP status</h2><table><tr><th>status</th><th class="n">count</th></tr>{{range .Status}}<tr><td>{{.K}}</td><td class="n">{{.V}}</td></tr>{{end}}</table>{{end}}
{{if .Polls}}<h2>Poll errors (retried)</h2><table><tr><th>type</th><th class="n">count</th></tr>{{range .Polls}}<tr><td>{{.K}}</td><td class="n">{{.V}}</td></tr>{{end}}</table>{{end}}
<h2>Latency over time</h2>
{{.TimeSVG}}
<h2>Requests over time</h2>
{{.RateSVG}}
{{if .Hists}}<h2>Latency histograms</h2>{{range .Hists}}<h3>{{.Name}}</h3>{{.SVG}}{{end}}{{end}}
<h2>Raw report</h2>
<details><summary>JSON</summary><pre>{{.JSON}}</pre></details>
</body>
</html>
`))

// Chart geometry.
const (
	chartW, chartH             = 960, 300
	padL, padR, padT, padB     = 70, 20, 28, 40
	plotW, plotH               = chartW - padL - padR, chartH - padT - padB
	colP50, colP99, colMax     = "#2f6fde", "#e0822d", "#c43c3c"
	colE2E50, colE2E99, colErr = "#2a9d6f", "#7a4bc4", "#c43c3c"
)

type lineSeries struct {
	name, color string
	ys          []float64 // µs; ≤ 0 = no value
}

func (r *Report) latencyOverTimeSVG() string {
	n := len(r.Timeline)
	xs := make([]float64, n)
	mk := func(f func(TimelinePoint) time.Duration) []float64 {
		ys := make([]float64, n)
		for i, p := range r.Timeline {
			ys[i] = float64(f(p)) / float64(time.Microsecond)
		}
		return ys
	}
	for i, p := range r.Timeline {
		xs[i] = (p.T + r.TimelineWidth/2).Seconds()
	}
	name := "latency"
	if s := r.summaries(); len(s) > 0 {
		name = s[0].Name
	}
	series := []lineSeries{
		{name + " p50", colP50, mk(func(p TimelinePoint) time.Duration { return p.P50 })},
		{name + " p99", colP99, mk(func(p TimelinePoint) time.Duration { return p.P99 })},
		{name + " max", colMax, mk(func(p TimelinePoint) time.Duration { return p.Max })},
	}
	if r.EndToEnd != nil {
		series = append(series,
			lineSeries{"end-to-end p50", colE2E50, mk(func(p TimelinePoint) time.Duration { return p.E2EP50 })},
			lineSeries{"end-to-end p99", colE2E99, mk(func(p TimelinePoint) time.Duration { return p.E2EP99 })})
	}
	return lineChartSVG("latency by intended send time (log scale)", xs, series)
}

// lineChartSVG plots series over xs (seconds) with a logarithmic y axis.
func lineChartSVG(title string, xs []float64, series []lineSeries) string {
	var b strings.Builder
	svgOpen(&b, title)
	lo, hi := math.Inf(1), 0.0
	for _, s := range series {
		for _, y := range s.ys {
			if y > 0 {
				lo, hi = math.Min(lo, y), math.Max(hi, y)
			}
		}
	}
	if hi == 0 || len(xs) == 0 {
		svgEmpty(&b)
		return b.String()
	}
	d0, d1 := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if d1 <= d0 {
		d1 = d0 + 1
	}
	ypx := func(y float64) float64 { return padT + plotH*(1-(math.Log10(y)-d0)/(d1-d0)) }
	xMax := xs[len(xs)-1] + xs[0]
	xpx := func(x float64) float64 { return padL + plotW*x/xMax }
	for d := d0; d <= d1; d++ {
		y := ypx(math.Pow(10, d))
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e3e6eb"/>`, padL, y, padL+plotW, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, padL-6, y+4, html.EscapeString(fmtDur(time.Duration(math.Pow(10, d)*float64(time.Microsecond)))))
	}
	xAxis(&b, xMax, "seconds since start")
	for _, s := range series {
		var seg []string
		flush := func() {
			switch len(seg) {
			case 0:
			case 1:
				fmt.Fprintf(&b, `<circle cx="%s" r="2" fill="%s"/>`, strings.Replace(seg[0], ",", `" cy="`, 1), s.color)
			default:
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, s.color, strings.Join(seg, " "))
			}
			seg = seg[:0]
		}
		for i, y := range s.ys {
			if y <= 0 {
				flush()
				continue
			}
			seg = append(seg, fmt.Sprintf("%.1f,%.1f", xpx(xs[i]), ypx(y)))
		}
		flush()
	}
	legend(&b, series)
	b.WriteString("</svg>")
	return b.String()
}

func (r *Report) requestsOverTimeSVG() string {
	var b strings.Builder
	svgOpen(&b, fmt.Sprintf("requests and errors per %v bucket, by intended send time", r.TimelineWidth))
	hi := int64(0)
	for _, p := range r.Timeline {
		hi = max(hi, p.Requests)
	}
	if hi == 0 {
		svgEmpty(&b)
		return b.String()
	}
	n := len(r.Timeline)
	bw := float64(plotW) / float64(n)
	ypx := func(v int64) float64 { return padT + plotH*(1-float64(v)/float64(hi)) }
	for _, f := range []float64{0, 0.5, 1} {
		v := int64(math.Round(f * float64(hi)))
		y := ypx(v)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e3e6eb"/><text x="%d" y="%.1f" text-anchor="end">%d</text>`, padL, y, padL+plotW, y, padL-6, y+4, v)
	}
	for i, p := range r.Timeline {
		x := padL + bw*float64(i)
		tip := fmt.Sprintf("%v–%v: %d requests, %d errors", p.T, p.T+r.TimelineWidth, p.Requests, p.Errors)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>`,
			x, ypx(p.Requests), math.Max(bw-1, 0.5), padT+plotH-ypx(p.Requests), colP50, html.EscapeString(tip))
		if p.Errors > 0 {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`,
				x, ypx(p.Errors), math.Max(bw-1, 0.5), padT+plotH-ypx(p.Errors), colErr)
		}
	}
	xAxis(&b, float64(n)*r.TimelineWidth.Seconds(), "seconds since start")
	legend(&b, []lineSeries{{name: "requests", color: colP50}, {name: "errors", color: colErr}})
	b.WriteString("</svg>")
	return b.String()
}

// histogramSVG draws log-spaced bins as equally wide bars.
func histogramSVG(bins []HistBin) string {
	var b strings.Builder
	svgOpen(&b, "count by latency (log-spaced bins)")
	hi := int64(0)
	for _, x := range bins {
		hi = max(hi, x.Count)
	}
	if hi == 0 {
		svgEmpty(&b)
		return b.String()
	}
	n := len(bins)
	bw := float64(plotW) / float64(n)
	ypx := func(v int64) float64 { return padT + plotH*(1-float64(v)/float64(hi)) }
	for _, f := range []float64{0, 0.5, 1} {
		v := int64(math.Round(f * float64(hi)))
		y := ypx(v)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e3e6eb"/><text x="%d" y="%.1f" text-anchor="end">%d</text>`, padL, y, padL+plotW, y, padL-6, y+4, v)
	}
	step := max(n/8, 1)
	for i, x := range bins {
		px := padL + bw*float64(i)
		tip := fmt.Sprintf("%s – %s: %d", fmtDur(x.From), fmtDur(x.To), x.Count)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>`,
			px, ypx(x.Count), math.Max(bw-1, 0.5), padT+plotH-ypx(x.Count), colP50, html.EscapeString(tip))
		if i%step == 0 || i == n-1 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, px+bw/2, padT+plotH+16, html.EscapeString(fmtDur(x.From)))
		}
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#9aa1ad"/>`, padL, padT+plotH, padL+plotW, padT+plotH)
	b.WriteString("</svg>")
	return b.String()
}

func svgOpen(b *strings.Builder, title string) {
	fmt.Fprintf(b, `<svg viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`, chartW, chartH, chartW, chartH, html.EscapeString(title))
	fmt.Fprintf(b, `<text x="%d" y="16">%s</text>`, padL, html.EscapeString(title))
}

func svgEmpty(b *strings.Builder) {
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">no data</text></svg>`, chartW/2, chartH/2)
}

// xAxis draws the x axis from 0 to xMax seconds with about 8 ticks.
func xAxis(b *strings.Builder, xMax float64, label string) {
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#9aa1ad"/>`, padL, padT+plotH, padL+plotW, padT+plotH)
	step := niceStep(xMax / 8)
	for x := 0.0; x <= xMax+step/1e6; x += step {
		px := padL + plotW*x/xMax
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#9aa1ad"/><text x="%.1f" y="%d" text-anchor="middle">%s</text>`,
			px, padT+plotH, px, padT+plotH+4, px, padT+plotH+16, strconv.FormatFloat(x, 'f', -1, 64))
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`, padL+plotW/2, chartH-6, html.EscapeString(label))
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func legend(b *strings.Builder, series []lineSeries) {
	x := padL + plotW
	for i := len(series) - 1; i >= 0; i-- {
		s := series[i]
		w := 18 + 7*len([]rune(s.name))
		x -= w
		fmt.Fprintf(b, `<rect x="%d" y="8" width="10" height="10" fill="%s"/><text x="%d" y="17">%s</text>`, x, s.color, x+14, html.EscapeString(s.name))
	}
}
