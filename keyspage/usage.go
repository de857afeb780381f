package keyspage

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/usage"
)

// usageDays is how many UTC days, today included, the usage chart and the
// sparklines show.
const usageDays = 30

// usageReaders bounds the per-key usage reads of one page that run at
// once.
const usageReaders = 4

// The geometry of the usage chart, in CSS pixels down its fixed height.
// Across, positions are percentages of its width, so that it fits any
// screen without scaling its text. page.html draws the frame with the
// same numbers. The chart is 200 pixels high, with its axis at chartBase
// and the day labels below it. Sparklines are sparkWidth by sparkHeight.
const (
	chartTop    = 22  // the top of the plot
	chartBase   = 176 // the baseline of the bars
	sparkWidth  = 100
	sparkHeight = 24
)

// usageView is the usage section. It shows the owner's requests per day over
// the last usageDays days, as bars and as a table of the same numbers.
type usageView struct {
	// Failed reports that usage could not be read. A note then replaces
	// the chart.
	Failed bool

	Days                  []dayBar
	Allowed, Limited      string // totals
	Summary, Desc         string
	Grid                  []gridLine
	Quota                 *quotaLine
	First, Middle, Latest axisLabel
}

// dayBar is one day of the chart. It is a bar of allowed requests with the
// limited ones stacked on it, and a row of the table.
type dayBar struct {
	Date, Label, Title string // 2026-11-27, "Fri, Nov 27", the bar's tooltip
	Allowed, Limited   string // formatted counts
	X, W               string // across, in percent
	AY, AH, LY, LH     string // down, in pixels: allowed and limited
}

// gridLine is a horizontal line of the chart at a round count, labelled
// in the chart's left padding.
type gridLine struct {
	Y, LabelY, Text string
}

// quotaLine is the daily quota drawn across the chart, and named in its
// legend.
type quotaLine struct {
	Y, Text string
}

// axisLabel is a day named under the bars.
type axisLabel struct {
	X, Anchor, Text string
}

// spark is the sparkline of one key in the table of keys.
type spark struct {
	Allowed, Limited string // polyline points; Limited empty when none was
	Label            string // what a screen reader says
	Total            string // allowed requests, formatted
}

// usageRange returns the first and the end of the last usageDays UTC
// days, today included.
func usageRange(now time.Time) (from, to time.Time) {
	now = now.UTC()
	to = time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	return to.AddDate(0, 0, -usageDays), to
}

// readUsage fills v with the owner's usage and each listed key's
// sparkline: one Manager.Usage call for the owner and one per key, at
// most usageReaders at once. A store without usage.Store leaves the
// section out; a failed read shows a note, or no sparkline for that key.
func (p *Page) readUsage(ctx context.Context, owner string, keys []*apikey.Key, now time.Time, v *view) {
	from, to := usageRange(now)
	days, err := p.m.Usage(ctx, usage.Query{Customer: owner, From: from, To: to, Step: usage.Day})
	if errors.Is(err, errors.ErrUnsupported) {
		return
	}
	if err != nil {
		p.logUsage(ctx, err)
		v.Usage = &usageView{Failed: true}
		return
	}
	var quota int64
	if p.quota != nil {
		if q, ok := p.quota(ctx, owner); ok && q > 0 {
			quota = q
		}
	}
	v.Usage = chartOf(days, quota)

	series := make([][]usage.Record, len(keys))
	errs := make([]error, len(keys))
	sem := make(chan struct{}, usageReaders)
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			series[i], errs[i] = p.m.Usage(ctx, usage.Query{Customer: owner, KeyID: k.ID, From: from, To: to, Step: usage.Day})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		p.logUsage(ctx, err)
	}
	v.Sparks = true
	for i := range v.Keys {
		if errs[i] == nil {
			v.Keys[i].Spark = sparkOf(series[i], v.Keys[i].Name)
		}
	}
}

func (p *Page) logUsage(ctx context.Context, err error) {
	if p.log != nil {
		p.log.ErrorContext(ctx, "keyspage: usage store failed", "error", err)
	}
}

// chartOf lays out days (one record a day, oldest first) as a bar chart,
// with a line at quota when it is positive.
func chartOf(days []usage.Record, quota int64) *usageView {
	u := &usageView{Days: make([]dayBar, len(days))}
	var allowed, limited, peak int64
	for _, d := range days {
		allowed += d.Allowed
		limited += d.Limited
		peak = max(peak, d.Allowed+d.Limited)
	}
	u.Allowed, u.Limited = count(allowed), count(limited)
	top, step := scale(max(peak, quota))
	y := func(n int64) float64 {
		if top == 0 {
			return chartBase
		}
		return chartBase - float64(n)/float64(top)*(chartBase-chartTop)
	}
	slot := 100 / float64(len(days))
	for i, d := range days {
		ah, lh := height(d.Allowed, top), height(d.Limited, top)
		date := d.Start.UTC()
		u.Days[i] = dayBar{
			Date: date.Format(time.DateOnly), Label: date.Format("Mon, Jan 2"),
			Title:   date.Format("Jan 2") + ": " + count(d.Allowed) + " allowed, " + count(d.Limited) + " limited",
			Allowed: count(d.Allowed), Limited: count(d.Limited),
			X: percent(float64(i)*slot + slot*0.15), W: percent(slot * 0.7),
			AY: decimal(chartBase - ah), AH: decimal(ah),
			LY: decimal(chartBase - ah - lh), LH: decimal(lh),
		}
	}
	for n := step; step > 0 && n <= top; n += step {
		u.Grid = append(u.Grid, gridLine{Y: decimal(y(n)), LabelY: decimal(y(n) + 4), Text: short(n)})
	}
	if len(days) > 0 {
		first, last := days[0].Start.UTC(), days[len(days)-1].Start.UTC()
		mid := len(days) / 2
		u.First = axisLabel{X: "0%", Anchor: "start", Text: first.Format("Jan 2")}
		u.Middle = axisLabel{X: percent((float64(mid) + 0.5) * slot), Anchor: "middle", Text: days[mid].Start.UTC().Format("Jan 2")}
		u.Latest = axisLabel{X: "100%", Anchor: "end", Text: last.Format("Jan 2")}
		span := first.Format("Jan 2") + " to " + last.Format("Jan 2")
		u.Desc = "Requests per day from " + span + " (UTC): "
		if allowed+limited == 0 {
			u.Desc += "none."
			u.Summary = "No requests in the last 30 days."
		} else {
			u.Desc += u.Allowed + " allowed, at most " + count(peak) + " in a day; " + u.Limited + " limited."
			u.Summary = "Last 30 days: " + u.Allowed + " requests allowed, " + u.Limited + " limited (429)."
		}
		if quota > 0 {
			u.Desc += " Daily quota: " + count(quota) + "."
			u.Summary += " Today: " + count(days[len(days)-1].Allowed) + " of your daily quota of " + count(quota) + "."
		}
	}
	if quota > 0 {
		u.Quota = &quotaLine{Y: decimal(y(quota)), Text: count(quota)}
	}
	return u
}

// sparkOf draws days (one record a day, oldest first) as a sparkline of
// the key named name.
func sparkOf(days []usage.Record, name string) *spark {
	var allowed, limited, peak int64
	for _, d := range days {
		allowed += d.Allowed
		limited += d.Limited
		peak = max(peak, d.Allowed, d.Limited)
	}
	line := func(n func(usage.Record) int64) string {
		var b strings.Builder
		for i, d := range days {
			x := 0.0
			if len(days) > 1 {
				x = float64(i) * sparkWidth / float64(len(days)-1)
			}
			y := float64(sparkHeight - 2)
			if peak > 0 {
				y -= float64(n(d)) / float64(peak) * (sparkHeight - 4)
			}
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(decimal(x) + "," + decimal(y))
		}
		return b.String()
	}
	s := &spark{Total: count(allowed), Allowed: line(func(d usage.Record) int64 { return d.Allowed })}
	if limited > 0 {
		s.Limited = line(func(d usage.Record) int64 { return d.Limited })
	}
	if name == "" {
		name = "(no name)"
	}
	s.Label = "“" + name + "”, last 30 days: " + s.Total + " requests allowed"
	if limited > 0 {
		s.Label += ", " + count(limited) + " limited"
	}
	return s
}

// scale returns the top of a chart whose tallest value is peak, a whole
// number of steps, and its step: 1, 2 or 5 times a power of ten, at least
// a quarter of peak. A peak of 0 has no scale: (0, 0).
func scale(peak int64) (top, step int64) {
	if peak <= 0 {
		return 0, 0
	}
	quarter := (peak + 3) / 4
	for p := int64(1); ; p *= 10 {
		for _, m := range []int64{1, 2, 5} {
			if step = m * p; step >= quarter {
				return (peak + step - 1) / step * step, step
			}
		}
	}
}

// height is the height in pixels of a bar of n on a chart topped at top;
// a non-zero count is at least one pixel high, so that it shows.
func height(n, top int64) float64 {
	if n <= 0 || top <= 0 {
		return 0
	}
	return max(1, float64(n)/float64(top)*(chartBase-chartTop))
}

// decimal formats f with at most one decimal.
func decimal(f float64) string {
	return strconv.FormatFloat(float64(int64(f*10+0.5))/10, 'f', -1, 64)
}

// percent formats f, a percentage, with at most three decimals.
func percent(f float64) string {
	return strconv.FormatFloat(float64(int64(f*1000+0.5))/1000, 'f', -1, 64) + "%"
}

// short formats n, a round count, in at most five characters: 500,
// 1.5k, 20k, 2.5M.
func short(n int64) string {
	switch {
	case n >= 1_000_000_000:
		return strconv.FormatFloat(float64(n)/1e9, 'f', -1, 64) + "G"
	case n >= 1_000_000:
		return strconv.FormatFloat(float64(n)/1e6, 'f', -1, 64) + "M"
	case n >= 1000:
		return strconv.FormatFloat(float64(n)/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatInt(n, 10)
}

// count formats n with thousands separators: 12,345.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
