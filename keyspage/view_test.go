package keyspage

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/gokeys/apikey"
)

func TestRelative(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		d    time.Duration // t = now - d
		want string
	}{
		{"now", 0, "just now"},
		{"seconds ago", 44 * time.Second, "just now"},
		{"a minute ago", 50 * time.Second, "1 minute ago"},
		{"minutes ago", 3 * time.Minute, "3 minutes ago"},
		{"rounded minutes", 3*time.Minute + 40*time.Second, "4 minutes ago"},
		{"an hour ago", 50 * time.Minute, "1 hour ago"},
		{"hours ago", 5 * time.Hour, "5 hours ago"},
		{"a day and a half", 36 * time.Hour, "2 days ago"},
		{"days ago", 40 * day, "40 days ago"},
		{"months ago", 200 * day, "7 months ago"},
		{"years ago", 800 * day, "2 years ago"},
		{"soon", -30 * time.Second, "just now"},
		{"in minutes", -10 * time.Minute, "in 10 minutes"},
		{"in an hour", -time.Hour, "in 1 hour"},
		{"in days", -30 * day, "in 30 days"},
		{"in months", -90 * day, "in 3 months"},
		{"in a year", -365 * day, "in 1 year"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, relative(now.Add(-tt.d), now))
		})
	}
}

func TestSpan(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    time.Duration
		want string
	}{
		{time.Minute, "1 minute"},
		{90 * time.Minute, "90 minutes"},
		{time.Hour, "1 hour"},
		{36 * time.Hour, "36 hours"},
		{day, "1 day"},
		{7 * day, "7 days"},
		{365 * day, "1 year"},
		{90 * time.Second, "1m30s"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) { assert.Equal(t, tt.want, span(tt.d)) })
	}
}

func TestRowState(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		key       apikey.Key
		suspended bool
		state     string
		actions   []bool // rename, rotate, pause, resume, revoke, revoke chain
	}{
		{"active", apikey.Key{}, false, "active", []bool{true, true, true, false, true, false}},
		{"active in a chain", apikey.Key{RotatedFrom: "x"}, false, "active", []bool{true, true, true, false, true, true}},
		{"paused", apikey.Key{Paused: true}, false, "paused", []bool{true, false, false, true, true, false}},
		{"disabled by the service", apikey.Key{Disabled: true}, false, "disabled", []bool{true, false, false, false, true, false}},
		{"disabled and paused", apikey.Key{Disabled: true, Paused: true}, false, "disabled", []bool{true, false, false, false, true, false}},
		{"in grace", apikey.Key{RotatedTo: "x", ExpiresAt: now.Add(time.Hour)}, false, "grace", []bool{true, false, true, false, true, true}},
		{"rotated, grace over", apikey.Key{RotatedTo: "x", ExpiresAt: now}, false, "expired", []bool{false, false, false, false, false, false}},
		{"expired", apikey.Key{ExpiresAt: now.Add(-time.Second)}, false, "expired", []bool{false, false, false, false, false, false}},
		{"revoked", apikey.Key{RevokedAt: now.Add(-time.Second), ExpiresAt: now.Add(time.Hour)}, false, "revoked", []bool{false, false, false, false, false, false}},
		{"revoked wins over disabled", apikey.Key{RevokedAt: now, Disabled: true}, false, "revoked", []bool{false, false, false, false, false, false}},
		{"disabled wins over grace", apikey.Key{Disabled: true, RotatedTo: "x", ExpiresAt: now.Add(time.Hour)}, false, "disabled", []bool{true, false, false, false, true, true}},
		{"suspended: revoke only", apikey.Key{RotatedFrom: "x"}, true, "active", []bool{false, false, false, false, true, true}},
		{"suspended and paused", apikey.Key{Paused: true}, true, "paused", []bool{false, false, false, false, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := tt.key
			r := rowOf(&k, now, tt.suspended)
			assert.Equal(t, tt.state, r.State)
			assert.Equal(t, tt.actions, []bool{r.CanRename, r.CanRotate, r.CanPause, r.CanResume, r.CanRevoke, r.CanRevokeChain})
			if tt.state == "revoked" {
				assert.True(t, r.Expiry.Zero, "a revoked key shows no expiry")
			}
		})
	}
}
