package keyshttp

import "github.com/gokeys/apikey"

// creditsName is the name of the credits limit the credits field sets.
const creditsName = "credits"

// setCredits returns ls with its credits limit set to n lifetime uses
// (never refilled), or removed when n is negative.
func setCredits(ls []apikey.Limit, n int64) []apikey.Limit {
	out := make([]apikey.Limit, 0, len(ls)+1)
	for _, l := range ls {
		if l.Name != creditsName {
			out = append(out, l)
		}
	}
	if n >= 0 {
		out = append(out, apikey.Credits(creditsName, n, apikey.Never))
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
