// Package selfservice is the policy of what the owner of API keys may do
// to them himself. It is the one set of rules behind the management API
// (keyshttp), the keys page (keyspage) and any other owner-facing code.
//
//	policy, err := selfservice.New(manager, selfservice.Options{
//		Scopes: []string{"read", "write"}, // when the customer has no ceiling
//	})
//	if err != nil { ... }
//	api, err := keyshttp.New(manager, keyshttp.Options{Owner: currentUser, Policy: policy})
//	page, err := keyspage.New(manager, keyspage.Options{Owner: currentUser, Policy: policy})
//
// It denies by default. An owner may do the following.
//
//   - Create keys up to his customer's key cap (apikey.Customer.MaxKeys).
//     The Manager enforces the cap with apikey.ErrTooManyKeys.
//   - Give them scopes within what his customer was granted.
//   - Restrict them to IP ranges within his customer's
//     (apikey.Customer.AllowedIPs; any range when it has none), or lift
//     such a restriction of his own.
//   - Choose an expiry within the maximum key lifetime.
//   - Rename, rotate, pause, resume and revoke his keys, one at a time or a
//     whole rotation chain.
//   - Read the usage of his keys, one key or all of them (Usage).
//
// He may never set a plan, credits, limits, metadata, his scope ceiling or
// his customer's IP ranges.
// He may never lift a suspension the operator set (a key's Disabled, or
// his customer's Suspended). He may never revive an expired key, extend a
// key past the maximum lifetime, or change a revoked key. While his
// customer is suspended he may list and revoke his keys and read their
// usage, nothing else.
//
// Refusals are typed, as below.
//
//   - A field he may not set is a *FieldError (matching ErrForbidden, a 403
//     over HTTP), checked before anything is read.
//   - A suspension matches ErrForbidden and apikey.ErrSuspended.
//   - A bad value is an *apikey.InputError (400).
//   - The key's state answers apikey.ErrRevoked, apikey.ErrExpired or
//     apikey.ErrRotated (409).
//   - Another owner's key is apikey.ErrNotFound, like an unknown one.
//
// A request that would change nothing writes nothing and records no event.
package selfservice

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/ipallow"
	"github.com/gokeys/apikey/usage"
)

// Defaults of Options.
const (
	// DefaultMaxLifetime is the longest life of a key an owner creates
	// when Options.MaxLifetime is 0, 366 days.
	DefaultMaxLifetime = 366 * 24 * time.Hour
	// DefaultMaxGrace is the longest grace period of a rotation when
	// Options.MaxGrace is 0, 30 days.
	DefaultMaxGrace = 30 * 24 * time.Hour
)

// The fields of a key an owner may set, as requests name them. Every
// other field is refused with a *FieldError.
const (
	FieldName       = "name"
	FieldScopes     = "scopes"
	FieldExpiresAt  = "expires_at"
	FieldAllowedIPs = "allowed_ips"
)

// Options configures a Policy. The zero value offers no scopes (unless the
// customer's ceiling names some), keys that live at most 366 days and
// rotations with at most 30 days of grace.
type Options struct {
	// Scopes are the scopes an owner may give his keys when his customer
	// has no scope ceiling (apikey.Customer.Scopes nil). When the
	// operator set a ceiling, the ceiling is the list instead. When nil,
	// there are no scopes.
	Scopes []string

	// MaxLifetime bounds the life of a key an owner creates or changes.
	// Its expiry lies at most MaxLifetime after its creation, and a key
	// without expiry is never allowed. 366 days when 0.
	MaxLifetime time.Duration

	// DefaultLifetime is the life of a key created without an expiry,
	// MaxLifetime when 0. It must not exceed MaxLifetime.
	DefaultLifetime time.Duration

	// MaxGrace is the longest grace period of a rotation, 30 days when 0.
	MaxGrace time.Duration
}

// Policy decides, and carries out, what an owner does to his keys. Build
// it with New. It is safe for concurrent use. Every method takes the
// owner as the caller authenticated him and acts only on his keys.
type Policy struct {
	m               *apikey.Manager
	scopes          []string
	maxLifetime     time.Duration
	defaultLifetime time.Duration
	maxGrace        time.Duration
}

// New returns the policy over m. It returns an error wrapping
// apikey.ErrInvalidOptions for a nil Manager, a scope that is not an RFC
// 6749 scope token or is listed twice, a negative duration, or a
// DefaultLifetime beyond MaxLifetime.
func New(m *apikey.Manager, opts Options) (*Policy, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: selfservice: nil Manager", apikey.ErrInvalidOptions)
	}
	if opts.MaxLifetime < 0 || opts.DefaultLifetime < 0 || opts.MaxGrace < 0 {
		return nil, fmt.Errorf("%w: selfservice: negative MaxLifetime, DefaultLifetime or MaxGrace", apikey.ErrInvalidOptions)
	}
	for i, s := range opts.Scopes {
		if !ScopeToken(s) {
			return nil, fmt.Errorf("%w: selfservice: invalid scope %q", apikey.ErrInvalidOptions, s)
		}
		if slices.Contains(opts.Scopes[:i], s) {
			return nil, fmt.Errorf("%w: selfservice: scope %q listed twice", apikey.ErrInvalidOptions, s)
		}
	}
	p := &Policy{
		m: m, scopes: slices.Clone(opts.Scopes), maxLifetime: opts.MaxLifetime,
		defaultLifetime: opts.DefaultLifetime, maxGrace: opts.MaxGrace,
	}
	if p.maxLifetime == 0 {
		p.maxLifetime = DefaultMaxLifetime
	}
	if p.defaultLifetime == 0 {
		p.defaultLifetime = p.maxLifetime
	}
	if p.defaultLifetime > p.maxLifetime {
		return nil, fmt.Errorf("%w: selfservice: DefaultLifetime exceeds MaxLifetime", apikey.ErrInvalidOptions)
	}
	if p.maxGrace == 0 {
		p.maxGrace = DefaultMaxGrace
	}
	return p, nil
}

// ScopeToken reports whether s is an RFC 6749 scope token, the grammar
// apikey.Manager accepts. Such a token is printable ASCII without space,
// '"' and '\', at most apikey.MaxScopeLength bytes.
func ScopeToken(s string) bool {
	if s == "" || len(s) > apikey.MaxScopeLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// Manager returns the Manager the policy acts through.
func (p *Policy) Manager() *apikey.Manager { return p.m }

// MaxLifetime returns the longest life of a key (Options.MaxLifetime).
func (p *Policy) MaxLifetime() time.Duration { return p.maxLifetime }

// DefaultLifetime returns the life of a key created without an expiry.
func (p *Policy) DefaultLifetime() time.Duration { return p.defaultLifetime }

// MaxGrace returns the longest grace period of a rotation.
func (p *Policy) MaxGrace() time.Duration { return p.maxGrace }

// CheckFields returns a *FieldError naming the first of fields that an owner
// may not set on a key. He may set FieldName, FieldScopes,
// FieldExpiresAt and FieldAllowedIPs, and no other field. A caller passes the names of the
// fields a request carries, before reading their values, so that a request
// trying a field it may not set is refused as such, never silently ignored.
func CheckFields(fields ...string) error {
	for _, f := range fields {
		switch f {
		case FieldName, FieldScopes, FieldExpiresAt, FieldAllowedIPs:
		default:
			return forbidden(f)
		}
	}
	return nil
}

// Allowance is what an owner may do at the moment, from his customer
// record.
type Allowance struct {
	// Suspended reports that the operator suspended the customer. He may
	// list and revoke his keys and read their usage, nothing else.
	Suspended bool
	// Scopes are the scopes he may give a key. They are the customer's
	// ceiling, or Options.Scopes when the customer has none.
	Scopes []string
	// MaxKeys is the most usable keys he may hold, with 0 for no cap. The
	// Manager enforces it.
	MaxKeys int
	// AllowedIPs are the IP ranges his keys may be restricted to: the
	// customer's. Empty: any address.
	AllowedIPs []netip.Prefix
}

// Allowance reads owner's customer record and returns what he may do.
func (p *Policy) Allowance(ctx context.Context, owner string) (*Allowance, error) {
	c, err := p.m.Customer(ctx, owner)
	if err != nil {
		return nil, err
	}
	a := &Allowance{Suspended: c.Suspended, Scopes: slices.Clone(p.scopes), MaxKeys: c.MaxKeys, AllowedIPs: c.AllowedIPs}
	if c.Scopes != nil {
		a.Scopes = slices.Clone(c.Scopes)
	}
	return a, nil
}

// errScopes refuses a scope the owner was not granted.
func errScopes() error {
	return &FieldError{Field: FieldScopes, Reason: "a scope outside those granted to the account"}
}

// checkScopes refuses a scope the owner was not granted.
func (a *Allowance) checkScopes(scopes []string) error {
	for _, s := range scopes {
		if !slices.Contains(a.Scopes, s) {
			return errScopes()
		}
	}
	return nil
}

// errIPs refuses a range outside those the owner's customer may use.
func errIPs() error {
	return &FieldError{Field: FieldAllowedIPs, Reason: "a range outside those the account may use"}
}

// checkIPs puts ranges in canonical form, refusing an invalid one
// (*apikey.InputError) or one outside the customer's (*FieldError).
func (a *Allowance) checkIPs(ranges []netip.Prefix) ([]netip.Prefix, error) {
	n, err := ipallow.Normalize(ranges)
	switch {
	case len(ranges) > apikey.MaxAllowedIPs:
		return nil, &apikey.InputError{Field: FieldAllowedIPs, Reason: fmt.Sprintf("more than %d ranges", apikey.MaxAllowedIPs)}
	case err != nil:
		return nil, &apikey.InputError{Field: FieldAllowedIPs, Reason: strings.TrimPrefix(err.Error(), ipallow.ErrInvalidRange.Error()+": ")}
	case len(a.AllowedIPs) > 0 && !ipallow.Within(n, a.AllowedIPs):
		return nil, errIPs()
	}
	return n, nil
}

// active returns owner's allowance, refusing a suspended customer.
func (p *Policy) active(ctx context.Context, owner string) (*Allowance, error) {
	a, err := p.Allowance(ctx, owner)
	if err != nil {
		return nil, err
	}
	if a.Suspended {
		return nil, errSuspended
	}
	return a, nil
}

// Create describes a key an owner asks for.
type Create struct {
	// Fields names every field the request carried, as the request named
	// it. An expiry given as a lifetime counts as FieldExpiresAt. Create
	// refuses the request with a *FieldError if one may not be set. Nil
	// for a request made of this struct's fields only.
	Fields []string
	// Name is the key's label.
	Name string
	// Scopes must be within the owner's Allowance.
	Scopes []string
	// ExpiresAt, if set, is when the key stops working. It must be in the
	// future and at most MaxLifetime away. It wins over TTL.
	ExpiresAt time.Time
	// TTL, if positive, is the key's lifetime, at most MaxLifetime.
	// Without ExpiresAt and TTL the key lives DefaultLifetime.
	TTL time.Duration
	// AllowedIPs, if set, restrict the key to these IP ranges, within
	// the owner's Allowance.
	AllowedIPs []netip.Prefix
}

// Create issues a key for owner and returns its token (its only
// appearance) and record. Beyond the customer's key cap it fails with
// apikey.ErrTooManyKeys.
func (p *Policy) Create(ctx context.Context, owner string, c Create) (string, *apikey.Key, error) {
	if err := CheckFields(c.Fields...); err != nil {
		return "", nil, err
	}
	if owner == "" {
		return "", nil, &apikey.InputError{Field: "owner", Reason: "empty"}
	}
	params := apikey.IssueParams{Owner: owner, Name: c.Name, Scopes: slices.Clone(c.Scopes)}
	now := p.m.Now()
	switch {
	case !c.ExpiresAt.IsZero():
		if !c.ExpiresAt.After(now) {
			return "", nil, &apikey.InputError{Field: FieldExpiresAt, Reason: "not in the future"}
		}
		if c.ExpiresAt.Sub(now) > p.maxLifetime {
			return "", nil, p.beyondLifetime()
		}
		params.ExpiresAt = c.ExpiresAt
	case c.TTL < 0:
		return "", nil, &apikey.InputError{Field: FieldExpiresAt, Reason: "a negative lifetime"}
	case c.TTL > p.maxLifetime:
		return "", nil, p.beyondLifetime()
	case c.TTL > 0:
		params.TTL = c.TTL
	default:
		params.TTL = p.defaultLifetime
	}
	a, err := p.active(ctx, owner)
	if err != nil {
		return "", nil, err
	}
	if err := a.checkScopes(c.Scopes); err != nil {
		return "", nil, err
	}
	if params.AllowedIPs, err = a.checkIPs(c.AllowedIPs); err != nil {
		return "", nil, err
	}
	token, k, err := p.m.Issue(ctx, params)
	var ie *apikey.InputError
	switch {
	case errors.Is(err, apikey.ErrSuspended): // suspended meanwhile
		return "", nil, errSuspended
	case errors.As(err, &ie) && ie.Field == FieldScopes:
		// Every scope was granted and is a valid token: the ceiling was
		// lowered meanwhile.
		return "", nil, &FieldError{Field: FieldScopes, Reason: "a scope outside those granted to the customer"}
	case errors.As(err, &ie) && ie.Field == FieldAllowedIPs:
		return "", nil, errIPs() // valid ranges: the customer's were narrowed meanwhile
	case err != nil:
		return "", nil, err
	}
	return token, k, nil
}

func (p *Policy) beyondLifetime() error {
	return &apikey.InputError{Field: FieldExpiresAt, Reason: fmt.Sprintf("beyond the maximum key lifetime (%s)", p.maxLifetime)}
}

// Get returns owner's key id. Another owner's key is apikey.ErrNotFound,
// like an unknown one.
func (p *Policy) Get(ctx context.Context, owner, id string) (*apikey.Key, error) {
	k, err := p.m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if owner == "" || k.Owner != owner {
		return nil, fmt.Errorf("selfservice: %w", apikey.ErrNotFound)
	}
	return k, nil
}

// List returns a page of owner's keys, newest first (see
// apikey.ListOptions). It reads one page from the store.
func (p *Policy) List(ctx context.Context, owner string, opts apikey.ListOptions) ([]*apikey.Key, error) {
	if owner == "" {
		return []*apikey.Key{}, nil
	}
	return p.m.List(ctx, owner, opts)
}

// Change describes changes to a key.
type Change struct {
	// Fields names the fields the request sets, among FieldName,
	// FieldScopes and FieldExpiresAt. Only those change. Any other is
	// refused with a *FieldError before anything is read.
	Fields []string
	// Name is the new name.
	Name string
	// Scopes are the new scopes, within the owner's Allowance.
	Scopes []string
	// ExpiresAt is the new expiry. It must be in the future and at most
	// MaxLifetime after the key's creation. Zero (no expiry) is refused, and
	// so is any change to an expired key.
	ExpiresAt time.Time
	// AllowedIPs are the key's new IP ranges, within the owner's
	// Allowance; empty lifts the key's own restriction (his customer's
	// ranges still hold).
	AllowedIPs []netip.Prefix
}

// errUnchanged stops an update that would change nothing.
var errUnchanged = errors.New("selfservice: nothing to change")

// Update changes owner's key id and returns it. A change that changes
// nothing writes nothing. A revoked key fails with apikey.ErrRevoked, an
// expired one with apikey.ErrExpired, and extending the grace period of a
// rotated key with apikey.ErrRotated.
func (p *Policy) Update(ctx context.Context, owner, id string, c Change) (*apikey.Key, error) {
	if err := CheckFields(c.Fields...); err != nil {
		return nil, err
	}
	set := func(f string) bool { return slices.Contains(c.Fields, f) }
	if _, err := p.Get(ctx, owner, id); err != nil {
		return nil, err
	}
	a, err := p.active(ctx, owner)
	if err != nil {
		return nil, err
	}
	if set(FieldScopes) {
		if err := a.checkScopes(c.Scopes); err != nil {
			return nil, err
		}
	}
	var ips []netip.Prefix
	if set(FieldAllowedIPs) {
		if ips, err = a.checkIPs(c.AllowedIPs); err != nil {
			return nil, err
		}
	}
	if set(FieldExpiresAt) && c.ExpiresAt.IsZero() {
		return nil, &apikey.InputError{Field: FieldExpiresAt, Reason: "a key must expire: the expiry cannot be removed"}
	}
	var current *apikey.Key
	k, err := p.m.Update(ctx, id, func(k *apikey.Key) error {
		current = k.Clone()
		now := p.m.Now()
		if k.Expired(now) {
			return fmt.Errorf("selfservice: %w", apikey.ErrExpired)
		}
		if set(FieldName) {
			k.Name = c.Name
		}
		if set(FieldScopes) {
			k.Scopes = slices.Clone(c.Scopes)
		}
		if set(FieldAllowedIPs) {
			k.AllowedIPs = slices.Clone(ips)
		}
		if set(FieldExpiresAt) {
			exp := apikey.UTCMicro(c.ExpiresAt)
			switch {
			case !exp.After(now):
				return &apikey.InputError{Field: FieldExpiresAt, Reason: "not in the future"}
			case k.RotatedTo != "" && exp.After(k.ExpiresAt):
				return fmt.Errorf("selfservice: %w: its expiry is the end of its grace period, which can be shortened, not extended", apikey.ErrRotated)
			case exp.Sub(k.CreatedAt) > p.maxLifetime:
				return p.beyondLifetime()
			}
			k.ExpiresAt = exp
		}
		if k.Name == current.Name && slices.Equal(k.Scopes, current.Scopes) && k.ExpiresAt.Equal(current.ExpiresAt) &&
			slices.Equal(k.AllowedIPs, current.AllowedIPs) {
			return errUnchanged
		}
		return nil
	})
	var ie *apikey.InputError
	switch {
	case errors.Is(err, errUnchanged):
		return current, nil
	case errors.As(err, &ie) && ie.Field == FieldScopes:
		return nil, &FieldError{Field: FieldScopes, Reason: "a scope outside those granted to the customer"}
	case errors.As(err, &ie) && ie.Field == FieldAllowedIPs:
		return nil, errIPs()
	case err != nil:
		return nil, err
	}
	return k, nil
}

// Rotate replaces owner's key id with a successor (see
// apikey.Manager.Rotate). The old key keeps working for grace, at most
// MaxGrace. A chain keeps at most one predecessor working.
func (p *Policy) Rotate(ctx context.Context, owner, id string, grace time.Duration) (*apikey.Rotation, error) {
	if grace < 0 || grace > p.maxGrace {
		return nil, &apikey.InputError{Field: "grace", Reason: fmt.Sprintf("must be between 0 and %s", p.maxGrace)}
	}
	if _, err := p.Get(ctx, owner, id); err != nil {
		return nil, err
	}
	if _, err := p.active(ctx, owner); err != nil {
		return nil, err
	}
	return p.m.Rotate(ctx, id, grace)
}

// Pause pauses owner's key id. It is refused until Resume. Pausing a
// paused key writes nothing.
func (p *Policy) Pause(ctx context.Context, owner, id string) (*apikey.Key, error) {
	k, err := p.Get(ctx, owner, id)
	if err != nil {
		return nil, err
	}
	if err := p.changeable(ctx, owner, k); err != nil {
		return nil, err
	}
	if k.Paused {
		return k, nil
	}
	return p.m.Pause(ctx, id)
}

// Resume lifts Pause. A key the operator disabled is refused with a
// *FieldError naming "disabled", because only the operator enables it.
// Resuming a key that is not paused writes nothing.
func (p *Policy) Resume(ctx context.Context, owner, id string) (*apikey.Key, error) {
	k, err := p.Get(ctx, owner, id)
	if err != nil {
		return nil, err
	}
	if k.Disabled {
		return nil, &FieldError{Field: "disabled", Reason: "the service disabled the key, and only the service can enable it"}
	}
	if err := p.changeable(ctx, owner, k); err != nil {
		return nil, err
	}
	if !k.Paused {
		return k, nil
	}
	return p.m.Unpause(ctx, id)
}

// changeable refuses owner's key k if his customer is suspended or k is
// revoked or expired.
func (p *Policy) changeable(ctx context.Context, owner string, k *apikey.Key) error {
	if _, err := p.active(ctx, owner); err != nil {
		return err
	}
	switch {
	case !k.RevokedAt.IsZero():
		return fmt.Errorf("selfservice: %w", apikey.ErrRevoked)
	case k.Expired(p.m.Now()):
		return fmt.Errorf("selfservice: %w", apikey.ErrExpired)
	}
	return nil
}

// Revoke revokes owner's key id, for good. A suspended customer may too.
// Revoking a revoked key is not an error and writes nothing.
func (p *Policy) Revoke(ctx context.Context, owner, id string) error {
	k, err := p.Get(ctx, owner, id)
	if err != nil || !k.RevokedAt.IsZero() {
		return err
	}
	return p.m.Revoke(ctx, id)
}

// RevokeChain revokes owner's key id and every key of its rotation chain,
// and returns the ids it revoked (see apikey.Manager.RevokeChain). A
// suspended customer may too.
func (p *Policy) RevokeChain(ctx context.Context, owner, id string) ([]string, error) {
	if _, err := p.Get(ctx, owner, id); err != nil {
		return nil, err
	}
	return p.m.RevokeChain(ctx, id)
}

// Usage returns the series of what owner consumed (see
// apikey.Manager.Usage). It is summed over all of his keys when q.KeyID is
// empty, else it is the series of his key q.KeyID, revoked or not. Another
// owner's key is apikey.ErrNotFound, like an unknown one. q.Customer is
// ignored, because the customer is always owner. An empty owner gives an
// *apikey.InputError. Reading usage changes nothing, so a suspended
// customer may too.
func (p *Policy) Usage(ctx context.Context, owner string, q usage.Query) ([]usage.Record, error) {
	q.Customer = owner
	if q.KeyID != "" {
		if _, err := p.Get(ctx, owner, q.KeyID); err != nil {
			return nil, err
		}
		q.Customer = ""
	}
	return p.m.Usage(ctx, q)
}
