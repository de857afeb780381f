package memstore

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
)

// table holds a Store's records in a shape the garbage collector barely
// has to trace. So a process holding a million keys does not pay for them
// at every collection. The shape follows these rules.
//
//   - each record is encoded into one []byte (no pointers inside, so the
//     collector marks it without scanning it);
//   - ids of IDLength bytes, the ids the Manager issues, are indexed in a
//     map whose keys and values hold no pointers (other ids in a map of
//     strings);
//   - owners are indexed by a 64-bit hash of the owner, each pointing to
//     its first record and, only for owners with several keys, a slice of
//     the others (a hash collision only costs a check: every record knows
//     its owner).
//
// Decoded keys alias the record's bytes for their strings. A record is
// never written after it is encoded (a change encodes a new one), so those
// strings never change. A table is not safe for concurrent use. The Store
// locks around it.
type table struct {
	recs   [][]byte // by slot; nil when the slot is free
	free   []uint32
	ids    map[[apikey.IDLength]byte]uint32
	other  map[string]uint32
	owners map[uint64]ownerSlots
	limits map[uint32][]limits.Limit // the few records with Limits
	ips    map[uint32][]netip.Prefix // the few records with AllowedIPs
	seed   maphash.Seed
}

// ownerSlots are the slots of one owner hash.
type ownerSlots struct {
	first uint32
	rest  []uint32
}

func newTable() *table {
	return &table{
		ids: map[[apikey.IDLength]byte]uint32{}, other: map[string]uint32{},
		owners: map[uint64]ownerSlots{}, limits: map[uint32][]limits.Limit{}, ips: map[uint32][]netip.Prefix{},
		seed: maphash.MakeSeed(),
	}
}

// idKey is id, of IDLength bytes, as a map key without pointers.
func idKey(id string) (k [apikey.IDLength]byte) {
	copy(k[:], id)
	return k
}

func (t *table) len() int { return len(t.ids) + len(t.other) }

// slot returns the slot of id.
func (t *table) slot(id string) (uint32, bool) {
	if len(id) == apikey.IDLength {
		s, ok := t.ids[idKey(id)]
		return s, ok
	}
	s, ok := t.other[id]
	return s, ok
}

// get returns a copy of the record of id, or nil.
func (t *table) get(id string) *apikey.Key {
	s, ok := t.slot(id)
	if !ok {
		return nil
	}
	return t.decode(s)
}

// owner returns the owner of the record in slot s without decoding the
// rest of it.
func (t *table) owner(s uint32) string {
	d := decoder{b: t.recs[s][headerLen:]}
	for range ownerField {
		d.skip()
	}
	return d.str()
}

// put stores a copy of k, replacing the record of the same id.
func (t *table) put(k *apikey.Key) {
	rec := encode(k)
	s, ok := t.slot(k.ID)
	if ok {
		if old := t.owner(s); old != k.Owner {
			t.unindexOwner(old, s)
			t.indexOwner(k.Owner, s)
		}
		t.recs[s] = rec
	} else {
		if n := len(t.free); n > 0 {
			s, t.free = t.free[n-1], t.free[:n-1]
			t.recs[s] = rec
		} else {
			s = uint32(len(t.recs))
			t.recs = append(t.recs, rec)
		}
		if len(k.ID) == apikey.IDLength {
			t.ids[idKey(k.ID)] = s
		} else {
			t.other[k.ID] = s
		}
		t.indexOwner(k.Owner, s)
	}
	if k.Limits != nil {
		t.limits[s] = slices.Clone(k.Limits)
	} else {
		delete(t.limits, s)
	}
	if k.AllowedIPs != nil {
		t.ips[s] = slices.Clone(k.AllowedIPs)
	} else {
		delete(t.ips, s)
	}
}

// del removes the record of id and reports whether there was one.
func (t *table) del(id string) bool {
	s, ok := t.slot(id)
	if !ok {
		return false
	}
	t.unindexOwner(t.owner(s), s)
	if len(id) == apikey.IDLength {
		delete(t.ids, idKey(id))
	} else {
		delete(t.other, id)
	}
	delete(t.limits, s)
	delete(t.ips, s)
	t.recs[s] = nil
	t.free = append(t.free, s)
	return true
}

// setLastUsed sets the last use of id to at if the stored one is unset or
// before cut (at itself, or earlier), in place: the record's header holds
// no bytes that a decoded key aliases. It reports whether it wrote.
func (t *table) setLastUsed(id string, at, cut time.Time) bool {
	s, ok := t.slot(id)
	if !ok {
		return false
	}
	h := t.recs[s][:headerLen]
	prev := getTime(h[lastUsedOff:])
	if !at.After(prev) || !prev.IsZero() && !prev.Before(cut) {
		return false
	}
	putTime(h[lastUsedOff:], at)
	return true
}

func (t *table) indexOwner(owner string, s uint32) {
	h := maphash.String(t.seed, owner)
	o, ok := t.owners[h]
	if !ok {
		t.owners[h] = ownerSlots{first: s}
		return
	}
	o.rest = append(o.rest, s)
	t.owners[h] = o
}

func (t *table) unindexOwner(owner string, s uint32) {
	h := maphash.String(t.seed, owner)
	o := t.owners[h]
	switch {
	case o.first == s && len(o.rest) == 0:
		delete(t.owners, h)
		return
	case o.first == s:
		o.first, o.rest = o.rest[len(o.rest)-1], o.rest[:len(o.rest)-1]
	default:
		if i := slices.Index(o.rest, s); i >= 0 {
			o.rest = slices.Delete(o.rest, i, i+1)
		}
	}
	if len(o.rest) == 0 {
		o.rest = nil
	}
	t.owners[h] = o
}

// owned calls f with the slot of every record of owner.
func (t *table) owned(owner string, f func(s uint32)) {
	o, ok := t.owners[maphash.String(t.seed, owner)]
	if !ok {
		return
	}
	for _, s := range append([]uint32{o.first}, o.rest...) {
		if t.owner(s) == owner {
			f(s)
		}
	}
}

// all calls f with the slot of every record.
func (t *table) all(f func(s uint32)) {
	for s, rec := range t.recs {
		if rec != nil {
			f(uint32(s))
		}
	}
}

// dead returns the ids of up to limit records revoked or expired before
// before, looking at every slot once at most, starting at slot from and
// going round; and the slot to start the next search at. Records are not
// decoded, only read.
func (t *table) dead(before time.Time, limit int, from uint32) ([]string, uint32) {
	var ids []string
	n := uint32(len(t.recs))
	for i := range n {
		s := (from + i) % n
		if t.recs[s] == nil || !t.deadAt(s, before) {
			continue
		}
		ids = append(ids, t.decodeID(s))
		if len(ids) == limit {
			return ids, s + 1
		}
	}
	return ids, 0
}

// deadAt reports whether the record in slot s was revoked before before,
// or expired before it.
func (t *table) deadAt(s uint32, before time.Time) bool {
	d := decoder{b: t.recs[s][headerLen:]}
	for range numStrings {
		d.skip()
	}
	if n, ok := d.count(); ok { // Hash
		d.bytes(n)
	}
	if n, ok := d.count(); ok { // Scopes
		for range n {
			d.skip()
		}
	}
	if n, ok := d.count(); ok { // Metadata
		for range 2 * n {
			d.skip()
		}
	}
	d.time() // CreatedAt
	expires, revoked := d.time(), d.time()
	return !revoked.IsZero() && revoked.Before(before) || !expires.IsZero() && expires.Before(before)
}

// decodeID returns a copy of the id of the record in slot s.
func (t *table) decodeID(s uint32) string {
	d := decoder{b: t.recs[s][headerLen:]}
	return strings.Clone(d.str())
}

// The record layout is a fixed header, then the other fields in
// fieldOrder. Strings and byte slices are a uvarint length and the bytes.
// Slices and maps are a uvarint count plus one (0 for nil) and their
// elements. Times are a flag byte then, if set, a varint of seconds and a
// uvarint of nanoseconds since the Unix epoch (always UTC). A last byte
// holds the flags Disabled and Paused.
const (
	lastUsedOff = 0  // LastUsedAt: flag, 8-byte seconds, 4-byte nanoseconds
	revisionOff = 16 // Revision, 8 bytes
	headerLen   = 24
	ownerField  = 5  // the index of Owner among the leading strings
	numStrings  = 10 // the leading strings
)

func putTime(b []byte, t time.Time) {
	if t.IsZero() {
		clear(b[:13])
		return
	}
	b[0] = 1
	binary.LittleEndian.PutUint64(b[1:], uint64(t.Unix()))
	binary.LittleEndian.PutUint32(b[9:], uint32(t.Nanosecond()))
}

func getTime(b []byte) time.Time {
	if b[0] == 0 {
		return time.Time{}
	}
	return time.Unix(int64(binary.LittleEndian.Uint64(b[1:])), int64(binary.LittleEndian.Uint32(b[9:]))).UTC()
}

// encode returns the record of k (its Limits and AllowedIPs, which hold
// pointers, are kept beside it).
func encode(k *apikey.Key) []byte {
	n := headerLen + 16*8 + len(k.ID) + len(k.Prefix) + len(k.Hint) + len(k.HashVersion) + len(k.Name) +
		len(k.Owner) + len(k.Plan) + len(k.RotatedFrom) + len(k.RotatedTo) + len(k.Lineage) + len(k.Hash) + 3*14
	for _, s := range k.Scopes {
		n += len(s) + 2
	}
	for name, v := range k.Metadata {
		n += len(name) + len(v) + 4
	}
	b := make([]byte, headerLen, n)
	putTime(b[lastUsedOff:], k.LastUsedAt)
	binary.LittleEndian.PutUint64(b[revisionOff:], uint64(k.Revision))
	// The leading strings; Owner is at index ownerField.
	for _, s := range [...]string{k.ID, k.Prefix, k.Hint, k.HashVersion, k.Name, k.Owner, k.Plan, k.RotatedFrom, k.RotatedTo, k.Lineage} {
		b = appendString(b, s)
	}
	b = appendCount(b, len(k.Hash), k.Hash == nil)
	b = append(b, k.Hash...)
	b = appendCount(b, len(k.Scopes), k.Scopes == nil)
	for _, s := range k.Scopes {
		b = appendString(b, s)
	}
	b = appendCount(b, len(k.Metadata), k.Metadata == nil)
	for name, v := range k.Metadata {
		b = appendString(appendString(b, name), v)
	}
	for _, t := range [...]time.Time{k.CreatedAt, k.ExpiresAt, k.RevokedAt, k.RotatedAt} {
		if t.IsZero() {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		b = binary.AppendVarint(b, t.Unix())
		b = binary.AppendUvarint(b, uint64(t.Nanosecond()))
	}
	var flags byte
	if k.Disabled {
		flags |= flagDisabled
	}
	if k.Paused {
		flags |= flagPaused
	}
	return append(b, flags)
}

// The bits of a record's last byte.
const (
	flagDisabled = 1 << iota
	flagPaused
)

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendCount(b []byte, n int, isNil bool) []byte {
	if isNil {
		return append(b, 0)
	}
	return binary.AppendUvarint(b, uint64(n)+1)
}

// decoded is a key and room for its small slices, allocated at once.
type decoded struct {
	key    apikey.Key
	scopes [2]string
	hash   [32]byte
}

// decode returns a new key from the record in slot s. Its strings alias
// the record, which is never written again.
func (t *table) decode(s uint32) *apikey.Key {
	rec := t.recs[s]
	c := new(decoded)
	k := &c.key
	k.LastUsedAt = getTime(rec[lastUsedOff:])
	k.Revision = int64(binary.LittleEndian.Uint64(rec[revisionOff:]))
	d := decoder{b: rec[headerLen:]}
	for _, p := range [...]*string{&k.ID, &k.Prefix, &k.Hint, &k.HashVersion, &k.Name, &k.Owner, &k.Plan, &k.RotatedFrom, &k.RotatedTo, &k.Lineage} {
		*p = d.str()
	}
	if n, ok := d.count(); ok {
		h := c.hash[:0:len(c.hash)]
		if n > len(c.hash) {
			h = make([]byte, 0, n)
		}
		k.Hash = append(h, d.bytes(n)...)[:n:n]
	}
	if n, ok := d.count(); ok {
		sc := c.scopes[:0:len(c.scopes)]
		if n > len(c.scopes) {
			sc = make([]string, 0, n)
		}
		for range n {
			sc = append(sc, d.str())
		}
		k.Scopes = sc[:n:n]
	}
	if n, ok := d.count(); ok {
		k.Metadata = make(map[string]string, n)
		for range n {
			name := d.str()
			k.Metadata[name] = d.str()
		}
	}
	for _, p := range [...]*time.Time{&k.CreatedAt, &k.ExpiresAt, &k.RevokedAt, &k.RotatedAt} {
		*p = d.time()
	}
	k.Disabled, k.Paused = d.b[0]&flagDisabled != 0, d.b[0]&flagPaused != 0
	if ls, ok := t.limits[s]; ok {
		k.Limits = slices.Clone(ls)
	}
	if ips, ok := t.ips[s]; ok {
		k.AllowedIPs = slices.Clone(ips)
	}
	return k
}

// decoder reads a record.
type decoder struct{ b []byte }

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n int) []byte {
	b := d.b[:n]
	d.b = d.b[n:]
	return b
}

// str returns the next string, aliasing the record.
func (d *decoder) str() string {
	n := int(d.uvarint())
	if n == 0 {
		return ""
	}
	return unsafe.String(&d.bytes(n)[0], n)
}

func (d *decoder) skip() { d.bytes(int(d.uvarint())) }

func (d *decoder) count() (int, bool) {
	n := d.uvarint()
	return int(n) - 1, n > 0
}

func (d *decoder) time() time.Time {
	set := d.b[0]
	d.b = d.b[1:]
	if set == 0 {
		return time.Time{}
	}
	sec, n := binary.Varint(d.b)
	d.b = d.b[n:]
	return time.Unix(sec, int64(d.uvarint())).UTC()
}
