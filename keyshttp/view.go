package keyshttp

import (
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
)

// keyView is a key as the API shows it, never with its token or digest.
// Every member is always present. Unset times and links are null.
type keyView struct {
	ID          string            `json:"id"`
	Prefix      string            `json:"prefix"`
	Hint        string            `json:"hint"`
	Name        string            `json:"name"`
	Scopes      []string          `json:"scopes"`
	Plan        string            `json:"plan"`
	Metadata    map[string]string `json:"metadata"`
	Limits      []limitView       `json:"limits"`
	CreatedAt   time.Time         `json:"created_at"`
	ExpiresAt   *time.Time        `json:"expires_at"`
	LastUsedAt  *time.Time        `json:"last_used_at"`
	RevokedAt   *time.Time        `json:"revoked_at"`
	Disabled    bool              `json:"disabled"`
	Paused      bool              `json:"paused"`
	RotatedAt   *time.Time        `json:"rotated_at"`
	RotatedFrom *string           `json:"rotated_from"`
	RotatedTo   *string           `json:"rotated_to"`
	AllowedIPs  []string          `json:"allowed_ips"`
}

// limitView is one of a key's own limits.
type limitView struct {
	Name          string `json:"name"`
	Kind          string `json:"kind"`
	Count         int64  `json:"count"`
	PeriodSeconds *int64 `json:"period_seconds,omitempty"`
	Burst         *int64 `json:"burst,omitempty"`
	Window        string `json:"window,omitempty"`
}

// createdView is the answer to a creation. It holds the key view and, this
// once, the token.
type createdView struct {
	keyView
	Key  string `json:"key"`
	Note string `json:"note"`
}

// rotatedView is the answer to a rotation. It holds the successor with its
// token, and what became of the old key.
type rotatedView struct {
	createdView
	Status          string     `json:"status"`
	OldKeyID        string     `json:"old_key_id"`
	OldKeyExpiresAt *time.Time `json:"old_key_expires_at"`
	Previous        keyView    `json:"previous"`
}

// listView is a page of keys.
type listView struct {
	Keys []keyView `json:"keys"`
	Next *string   `json:"next"`
}

const tokenNote = "Save this key now; it won't be shown again."

func view(k *apikey.Key) keyView {
	v := keyView{
		ID: k.ID, Prefix: k.Prefix, Hint: k.Hint, Name: k.Name, Scopes: k.Scopes, Plan: k.Plan, Metadata: k.Metadata,
		Limits: limitViews(k.Limits), CreatedAt: k.CreatedAt.UTC(), ExpiresAt: optTime(k.ExpiresAt),
		LastUsedAt: optTime(k.LastUsedAt), RevokedAt: optTime(k.RevokedAt), Disabled: k.Disabled, Paused: k.Paused,
		RotatedAt: optTime(k.RotatedAt), RotatedFrom: optString(k.RotatedFrom), RotatedTo: optString(k.RotatedTo),
	}
	if v.Scopes == nil {
		v.Scopes = []string{}
	}
	if v.Metadata == nil {
		v.Metadata = map[string]string{}
	}
	v.AllowedIPs = make([]string, len(k.AllowedIPs))
	for i, p := range k.AllowedIPs {
		v.AllowedIPs[i] = p.String()
	}
	return v
}

func limitViews(ls []limits.Limit) []limitView {
	out := make([]limitView, 0, len(ls))
	for _, l := range ls {
		lv := limitView{Name: l.Name, Count: l.Count}
		switch l.Kind {
		case limits.KindRate:
			lv.Kind = "rate"
			p, b := int64(l.Period/time.Second), l.Burst
			if b == 0 {
				b = l.Count
			}
			lv.PeriodSeconds, lv.Burst = &p, &b
		case limits.KindQuota:
			lv.Kind, lv.Window = "quota", l.Window.String()
		case limits.KindCredits:
			lv.Kind, lv.Window = "credits", l.Window.String()
		default:
			lv.Kind = "other"
		}
		out = append(out, lv)
	}
	return out
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
