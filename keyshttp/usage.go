package keyshttp

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/usage"
)

// The defaults of the usage routes' query.
const (
	// defaultUsageStep is the step of a query without step.
	defaultUsageStep = usage.Day
	// defaultHourSpan and defaultDaySpan are how far from lies before to
	// in a query without from, by hour and by day; by month it is 12
	// months.
	defaultHourSpan = 24 * time.Hour
	defaultDaySpan  = 30 * 24 * time.Hour
)

// usageView is the answer of a usage route. It holds the series, from its
// first bucket's start to its last bucket's end.
type usageView struct {
	From   time.Time    `json:"from"`
	To     time.Time    `json:"to"`
	Step   string       `json:"step"`
	Series []bucketView `json:"series"`
}

// bucketView is one bucket of a series.
type bucketView struct {
	Start   time.Time `json:"start"`
	Allowed int64     `json:"allowed"`
	Limited int64     `json:"limited"`
	Refused int64     `json:"refused"`
	Cost    int64     `json:"cost"`
}

// stepNames are the values of the step parameter.
var stepNames = [...]string{usage.Hour: "hour", usage.Day: "day", usage.Month: "month"}

// usage serves GET /usage (id empty: all of the owner's keys) and GET
// /api-keys/{id}/usage.
func (h *Handler) usage(w http.ResponseWriter, r *http.Request, owner, id string) {
	q, toGiven, f := h.usageQuery(r)
	if f != nil {
		h.fail(w, r, f)
		return
	}
	q.KeyID = id
	series, err := h.p.Usage(r.Context(), owner, q)
	var ie *apikey.InputError
	switch {
	case errors.As(err, &ie) && ie.Field == "to" && !toGiven:
		// The range is too long, or empty, for the from given: name it.
		writeProblem(w, http.StatusBadRequest, "Invalid from: with to now, "+ie.Reason+".", "from")
		return
	case errors.Is(err, errors.ErrUnsupported):
		writeProblem(w, http.StatusNotImplemented, "This service does not record usage.", "")
		return
	case err != nil:
		h.fail(w, r, err)
		return
	}
	out := usageView{Step: stepNames[q.Step], Series: make([]bucketView, 0, len(series))}
	for _, b := range series {
		out.Series = append(out.Series, bucketView{Start: b.Start.UTC(), Allowed: b.Allowed, Limited: b.Limited, Refused: b.Refused, Cost: b.Cost})
	}
	if n := len(series); n > 0 { // never 0: Manager.Usage refuses an empty range
		out.From = series[0].Start.UTC()
		out.To = nextStart(series[n-1].Start.UTC(), q.Step)
	}
	writeJSON(w, http.StatusOK, out)
}

// usageQuery reads the query of a usage route: step (hour, day or month;
// day when absent), to (RFC 3339; now when absent) and from (RFC 3339;
// 24 hours, 30 days or 12 months before to when absent). It reports
// whether to was given.
func (h *Handler) usageQuery(r *http.Request) (usage.Query, bool, *fieldError) {
	v := r.URL.Query()
	q := usage.Query{Step: defaultUsageStep}
	if v.Has("step") {
		switch v.Get("step") {
		case "hour":
			q.Step = usage.Hour
		case "day":
			q.Step = usage.Day
		case "month":
			q.Step = usage.Month
		default:
			return q, false, badField("step", "step must be hour, day or month.")
		}
	}
	toGiven := v.Has("to")
	q.To = h.m.Now()
	if toGiven {
		var f *fieldError
		if q.To, f = parseTime(v, "to"); f != nil {
			return q, toGiven, f
		}
	}
	if v.Has("from") {
		var f *fieldError
		if q.From, f = parseTime(v, "from"); f != nil {
			return q, toGiven, f
		}
	} else {
		switch q.Step {
		case usage.Hour:
			q.From = q.To.Add(-defaultHourSpan)
		case usage.Day:
			q.From = q.To.Add(-defaultDaySpan)
		default:
			q.From = q.To.AddDate(-1, 0, 0)
		}
	}
	return q, toGiven, nil
}

// lastUsageTime bounds from and to. The end of a bucket must still be a
// time of RFC 3339, whose years have four digits.
var lastUsageTime = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// parseTime reads the RFC 3339 time of parameter name, before the year
// 9999. A '+' of an offset that arrived as a space (an unescaped query)
// is taken as '+'.
func parseTime(v url.Values, name string) (time.Time, *fieldError) {
	t, err := time.Parse(time.RFC3339, strings.ReplaceAll(v.Get(name), " ", "+"))
	if err != nil || !t.Before(lastUsageTime) {
		return time.Time{}, badField(name, name+" must be a date and time in RFC 3339 before the year 9999, such as 2026-11-01T00:00:00Z.")
	}
	return t.UTC(), nil
}

// nextStart is the start of the bucket of step after the one starting at
// t.
func nextStart(t time.Time, step usage.Step) time.Time {
	switch step {
	case usage.Hour:
		return t.Add(time.Hour)
	case usage.Day:
		return t.AddDate(0, 0, 1)
	}
	return t.AddDate(0, 1, 0)
}
