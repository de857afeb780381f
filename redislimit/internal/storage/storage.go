// Package storage is the layout of limits in Redis shared by redislimit
// and redislimit/lease: the name of each limit's key, the key of the
// previous release, and the Lua helpers that read them. Both packages
// count in the same keys, so that instances of either share one budget.
package storage

import (
	_ "embed"
	"strconv"
	"strings"

	"github.com/gokeys/apikey/limits"
)

// Window is the Lua source of window(sec, w), the UTC window of a quota or
// credits (see window.lua).
//
//go:embed window.lua
var Window string

// Legacy is the Lua source of carried(key, we, count), the credits carried
// from the previous release's string (see legacy.lua). The script that
// includes it defines the variable nlimits before it.
//
//go:embed legacy.lua
var Legacy string

// Keys names the state of each limit of a call for subject, in one hash
// slot: see redislimit's package documentation. The slice has room for one
// more key (the legacy key).
func Keys(prefix, subject string, ls []limits.Limit) []string {
	keys := make([]string, len(ls), len(ls)+1)
	b := make([]byte, 0, 64)
	b = append(b, prefix...)
	b = append(b, '{')
	b = appendTag(b, subject)
	b = append(b, '}')
	base := len(b)
	for i := range ls {
		lim := &ls[i]
		b = append(b[:base], "?rqc"[lim.Kind])
		b = strconv.AppendInt(b, int64(len(lim.Name)), 10)
		b = append(b, ':')
		b = append(b, lim.Name...)
		if lim.Subject != "" {
			b = append(b, ':')
			b = append(b, lim.Subject...)
		}
		keys[i] = string(b)
	}
	return keys
}

// Key names the state of the single limit of a call for subject: what
// Keys names for ls holding lim alone.
func Key(prefix, subject string, lim *limits.Limit) string {
	var buf [128]byte
	b := append(buf[:0], prefix...)
	b = append(b, '{')
	b = appendTag(b, subject)
	b = append(b, '}', "?rqc"[lim.Kind])
	b = strconv.AppendInt(b, int64(len(lim.Name)), 10)
	b = append(b, ':')
	b = append(b, lim.Name...)
	if lim.Subject != "" {
		b = append(b, ':')
		b = append(b, lim.Subject...)
	}
	return string(b)
}

// LegacyKey returns the key under which the previous release kept all
// limits of subject, when the call holds credits that may be carried from
// it (see Upgrading in redislimit's package documentation), or "" when
// not. The key must share the hash slot of the call's keys: it is named
// only when its hash tag, the subject up to its first '}', is the call's
// tag, that is when subject holds none of '%', '{' and '}'.
func LegacyKey(prefix, subject string, ls []limits.Limit) string {
	for i := range ls {
		if ls[i].Kind == limits.KindCredits {
			if strings.ContainsAny(subject, "%{}") {
				return ""
			}
			return prefix + "{" + subject + "}"
		}
	}
	return ""
}

// appendTag appends subject as the hash tag of its keys: '%', '{' and '}'
// percent-encoded, so that the tag ends at the first '}' and two subjects
// never share one.
func appendTag(b []byte, subject string) []byte {
	if !strings.ContainsAny(subject, "%{}") {
		return append(b, subject...)
	}
	for i := 0; i < len(subject); i++ {
		switch c := subject[i]; c {
		case '%':
			b = append(b, "%25"...)
		case '{':
			b = append(b, "%7B"...)
		case '}':
			b = append(b, "%7D"...)
		default:
			b = append(b, c)
		}
	}
	return b
}
