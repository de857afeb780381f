package storage

import (
	"testing"
	"time"

	"github.com/gokeys/apikey/limits"
)

func TestKeyIsKeys(t *testing.T) {
	for _, subject := range []string{"acme", "a{b}%c", ""} {
		for _, lim := range []limits.Limit{
			limits.Rate("per-second", 10, time.Second, 0),
			limits.Quota("daily", 5, limits.Day),
			func() limits.Limit { c := limits.Credits("credits", 7, limits.Never); c.Subject = "AbC123"; return c }(),
		} {
			want := Keys("apikey:rl:", subject, []limits.Limit{lim})[0]
			if got := Key("apikey:rl:", subject, &lim); got != want {
				t.Errorf("Key = %q, Keys = %q", got, want)
			}
		}
	}
}
