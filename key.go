package apikey

import (
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/gokeys/apikey/limits"
)

// Key is the stored record of one API key. It is plain data. A Store fills
// its exported fields and needs no methods. It never holds the token or its
// secret, only their digest.
//
// Printing a Key with fmt (%v, %+v, %#v), encoding it to JSON or logging it
// with log/slog shows its ID and Hint, never its Hash. The zero time in a
// time field means "not set".
type Key struct {
	// ID is the public key id, the token's id part. Unique in the store.
	ID string `json:"id"`
	// Prefix is the token prefix the key was issued with, e.g. "sk_live".
	Prefix string `json:"prefix"`
	// Hint identifies the key to people. It is the prefix and the token's
	// last four characters, e.g. "sk_live_...a9Zq".
	Hint string `json:"hint"`
	// Hash is the digest of the key material. HashVersion names the hasher
	// and pepper version that made it.
	Hash        []byte `json:"-"`
	HashVersion string `json:"-"`

	// Name is a human-readable label, e.g. "Production server".
	Name string `json:"name,omitempty"`
	// Owner identifies the user or service the key belongs to.
	Owner string `json:"owner,omitempty"`
	// Scopes are the permissions granted to the key.
	Scopes []string `json:"scopes,omitempty"`
	// Plan names the rate-limit tier of the key (see Plans).
	Plan string `json:"plan,omitempty"`
	// Metadata holds application data. Never put secrets in it.
	Metadata map[string]string `json:"metadata,omitempty"`

	// CreatedAt is when the key was issued.
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is when the key stops working. Zero means never.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// LastUsedAt is the last successful verification known to the store.
	// It is written in batches, so it may lag by the flush interval.
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	// RevokedAt is when the key was revoked. Zero means not revoked.
	RevokedAt time.Time `json:"revoked_at,omitzero"`

	// RotatedFrom is the ID of the key this one replaced.
	RotatedFrom string `json:"rotated_from,omitempty"`
	// RotatedTo is the ID of the key that replaced this one.
	RotatedTo string `json:"rotated_to,omitempty"`
	// RotatedAt is when the key was rotated (when RotatedTo was set).
	RotatedAt time.Time `json:"rotated_at,omitzero"`
	// Lineage is the ID of the first key of this key's rotation chain.
	// A successor inherits it from the key it replaces, so that limits
	// counted per key survive a rotation. Empty means the key's own ID.
	Lineage string `json:"lineage,omitempty"`

	// Disabled suspends the key. It is refused like an invalid key until
	// enabled again (see Manager.Disable). Unlike revocation it is
	// reversible.
	Disabled bool `json:"disabled"`
	// Paused is set and cleared by the key's owner (see Manager.Pause).
	// The key is refused like a disabled key. It is a state of its own,
	// so that an owner can resume what he paused but never lift
	// Disabled, which is the operator's.
	Paused bool `json:"paused"`
	// Limits, if set, are the key's own limits. Rate and quota limits
	// replace those of its plan. Credits limits add to them.
	Limits []limits.Limit `json:"limits,omitempty"`
	// AllowedIPs, if set, are the only IP ranges the key may be used from,
	// within its customer's (Customer.AllowedIPs); nil or empty means any
	// address its customer may use. See docs/ip-restrictions.md.
	AllowedIPs []netip.Prefix `json:"allowed_ips,omitempty"`

	// Revision counts the writes to the record. A Store sets it to 1 on
	// Create and increments it on every change except MarkUsed. Update
	// writes only over the Revision it was given (optimistic concurrency).
	Revision int64 `json:"revision"`
}

// String shows the key's ID and Hint, never its Hash.
func (k Key) String() string { return "apikey.Key{ID:" + k.ID + " Hint:" + k.Hint + "}" }

// GoString shows the key's ID and Hint, never its Hash.
func (k Key) GoString() string { return k.String() }

// LogValue logs the key's ID and Hint, never its Hash.
func (k Key) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", k.ID), slog.String("hint", k.Hint))
}

// HasScope reports whether the key has scope, compared exactly.
func (k *Key) HasScope(scope string) bool {
	for _, s := range k.Scopes {
		if s == scope {
			return true
		}
	}
	return false
}

// Revoked reports whether the key is revoked. A revocation takes effect
// whatever the time. RevokedAt may lie in the future of a clock that runs
// behind the revoking Manager's (or that stepped back). The key is
// refused all the same.
func (k *Key) Revoked() bool { return !k.RevokedAt.IsZero() }

// Expired reports whether the key is expired at time now.
func (k *Key) Expired(now time.Time) bool { return !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt) }

// InGrace reports whether the key has been rotated and still works at now,
// until its ExpiresAt.
func (k *Key) InGrace(now time.Time) bool { return k.RotatedTo != "" && !k.Expired(now) }

// Clone returns a deep copy of k. Changing the copy's slices and maps does
// not change k. Small keys are copied in a single allocation.
func (k *Key) Clone() *Key {
	if k == nil {
		return nil
	}
	type compact struct {
		key    Key
		scopes [4]string
		hash   [64]byte
	}
	c := new(compact)
	c.key = *k
	if k.Scopes != nil {
		s := c.scopes[:0:len(c.scopes)]
		if len(k.Scopes) > len(c.scopes) {
			s = make([]string, 0, len(k.Scopes))
		}
		c.key.Scopes = append(s, k.Scopes...)[:len(k.Scopes):len(k.Scopes)]
	}
	if k.Hash != nil {
		h := c.hash[:0:len(c.hash)]
		if len(k.Hash) > len(c.hash) {
			h = make([]byte, 0, len(k.Hash))
		}
		c.key.Hash = append(h, k.Hash...)[:len(k.Hash):len(k.Hash)]
	}
	c.key.Metadata = maps.Clone(k.Metadata)
	if k.Limits != nil {
		c.key.Limits = append(make([]limits.Limit, 0, len(k.Limits)), k.Limits...)
	}
	c.key.AllowedIPs = slices.Clone(k.AllowedIPs)
	return &c.key
}

// lineage is the first key of k's rotation chain.
func lineage(k *Key) string {
	if k.Lineage != "" {
		return k.Lineage
	}
	return k.ID
}
