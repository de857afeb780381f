package apikey

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/crypto/bcrypt"
)

// A Hasher turns key material (a key's id followed by its secret) into the
// digest kept in the store, and checks material against a digest.
//
// Implementations must be safe for concurrent use, must compare in
// constant time, and must never return or log the material.
type Hasher interface {
	// Hash returns the digest of material and the version that produced
	// it. The version is stored with the key (Key.HashVersion) and given
	// back to Compare.
	Hash(material []byte) (digest []byte, version string, err error)

	// Compare reports whether material matches digest, which Hash produced
	// under version. An error means the comparison could not be made (for
	// example an unknown version, which is a configuration fault), never
	// that the material is wrong.
	Compare(material, digest []byte, version string) (bool, error)
}

// Hash versions written by the hashers of this package.
const (
	// versionSHA256 marks a digest made by plain SHA-256 (no pepper).
	versionSHA256 = "sha256"
	// versionBcrypt marks a bcrypt digest.
	versionBcrypt = "bcrypt"
	// versionHMAC prefixes the pepper version of an HMAC-SHA-256 digest:
	// "hmac-sha256:<pepper version>".
	versionHMAC = "hmac-sha256:"
)

// minPepperLength is the shortest pepper NewHMACHasher accepts, in bytes.
const minPepperLength = 32

// Pepper is a server-side secret that keys the HMAC of every stored digest.
// Keep it outside the database (an environment variable, a secret manager).
type Pepper struct {
	// Version names the pepper. It is stored with every digest it made.
	// It must be non-empty and must not change once digests use it.
	Version string
	// Secret is the pepper itself, at least 32 random bytes.
	Secret []byte
}

// hmacHasher is the default Hasher, HMAC-SHA-256 keyed by a pepper.
type hmacHasher struct {
	current  string
	versions map[string]*sync.Pool // pepper version -> pool of hash.Hash
}

// NewHMACHasher returns the Hasher a Manager builds from Options.Peppers.
// It is HMAC-SHA-256 keyed by current for new digests, and by any of older
// to verify digests they made. So a pepper can be rotated without
// breaking keys. Each pepper needs a distinct, non-empty version and at
// least 32 bytes. The Hasher is safe for concurrent use and
// does not allocate to compare.
func NewHMACHasher(current Pepper, older ...Pepper) (Hasher, error) {
	h := &hmacHasher{current: versionHMAC + current.Version, versions: map[string]*sync.Pool{}}
	for _, p := range append([]Pepper{current}, older...) {
		v := versionHMAC + p.Version
		switch {
		case p.Version == "" || strings.ContainsAny(p.Version, " \t\r\n"):
			return nil, fmt.Errorf("%w: pepper version must be non-empty without spaces", ErrInvalidOptions)
		case len(p.Secret) < minPepperLength:
			return nil, fmt.Errorf("%w: pepper %q is shorter than %d bytes", ErrInvalidOptions, p.Version, minPepperLength)
		case h.versions[v] != nil:
			return nil, fmt.Errorf("%w: pepper version %q given twice", ErrInvalidOptions, p.Version)
		}
		secret := append([]byte(nil), p.Secret...)
		h.versions[v] = &sync.Pool{New: func() any { return hmac.New(sha256.New, secret) }}
	}
	return h, nil
}

// Hash implements Hasher with the current pepper.
func (h *hmacHasher) Hash(material []byte) ([]byte, string, error) {
	var sum [sha256.Size]byte
	h.sum(h.versions[h.current], material, sum[:0])
	return append([]byte(nil), sum[:]...), h.current, nil
}

// Compare implements Hasher in constant time.
func (h *hmacHasher) Compare(material, digest []byte, version string) (bool, error) {
	pool := h.versions[version]
	if pool == nil {
		return false, ErrUnknownHashVersion
	}
	var sum [sha256.Size]byte
	return hmac.Equal(h.sum(pool, material, sum[:0]), digest), nil
}

func (h *hmacHasher) sum(pool *sync.Pool, material, dst []byte) []byte {
	m := pool.Get().(hash.Hash)
	m.Reset()
	m.Write(material)
	dst = m.Sum(dst)
	pool.Put(m)
	return dst
}

// sha256Hasher hashes with plain, unkeyed SHA-256. It is what a Manager
// uses when no pepper is configured. Secrets of 128 bits or more cannot be
// brute-forced from their digests, but anyone who can write to the store
// can forge digests. Prefer a pepper kept outside the database.
type sha256Hasher struct{}

// Hash implements Hasher.
func (sha256Hasher) Hash(material []byte) ([]byte, string, error) {
	sum := sha256.Sum256(material)
	return sum[:], versionSHA256, nil
}

// Compare implements Hasher in constant time.
func (sha256Hasher) Compare(material, digest []byte, version string) (bool, error) {
	if version != versionSHA256 {
		return false, ErrUnknownHashVersion
	}
	sum := sha256.Sum256(material)
	return subtle.ConstantTimeCompare(sum[:], digest) == 1, nil
}

// bcryptHasher hashes with bcrypt.
type bcryptHasher struct {
	cost int
}

// bcryptMaxInput is the most material bcrypt hashes without truncating.
const bcryptMaxInput = 72

// NewBcryptHasher returns a Hasher that hashes with bcrypt of the given
// cost (bcrypt.DefaultCost when 0), for those who want a slow KDF on top
// of high-entropy secrets. Verification still finds the record by id, so
// it costs one bcrypt comparison, never a scan. bcrypt reads at most 72
// bytes. Longer material is rejected with ErrMalformed, never truncated.
// New refuses a configuration whose tokens would exceed it (512-bit
// secrets). The Hasher is safe for concurrent use.
func NewBcryptHasher(cost int) (Hasher, error) {
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return nil, fmt.Errorf("%w: bcrypt cost %d outside [%d, %d]", ErrInvalidOptions, cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	return &bcryptHasher{cost: cost}, nil
}

// Hash implements Hasher.
func (b *bcryptHasher) Hash(material []byte) ([]byte, string, error) {
	if len(material) > bcryptMaxInput {
		return nil, "", ErrMalformed
	}
	d, err := bcrypt.GenerateFromPassword(material, b.cost)
	return d, versionBcrypt, err
}

// Compare implements Hasher. Bcrypt compares in constant time.
func (b *bcryptHasher) Compare(material, digest []byte, version string) (bool, error) {
	if version != versionBcrypt {
		return false, ErrUnknownHashVersion
	}
	if len(material) > bcryptMaxInput {
		return false, nil
	}
	err := bcrypt.CompareHashAndPassword(digest, material)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
		return false, nil
	}
	return false, fmt.Errorf("apikey: bcrypt: %w", err)
}

// maxMaterial reports the longest material h accepts, or 0 for no limit.
func maxMaterial(h Hasher) int {
	if _, ok := h.(*bcryptHasher); ok {
		return bcryptMaxInput
	}
	return 0
}

// readOnly returns the bytes of s without copying them, for a function
// that only reads its argument and keeps no reference to it.
func readOnly(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// verdict turns a Hasher's comparison of the material of a token of id
// with k's digest into check's answer.
func verdict(ok bool, err error, id string, k *Key) error {
	switch {
	case err != nil:
		return fmt.Errorf("apikey: compare: %w: %w", ErrUnavailable, err)
	case !ok || k == nil || k.ID != id:
		return ErrInvalid
	}
	return nil
}

// digests compares the material of tokens with the digests of keys, as
// the Manager's Hasher made them.
type digests struct {
	hasher Hasher
	// dummy is the digest an unknown id is compared against, so that it
	// costs the same work as a wrong secret.
	dummy        []byte
	dummyVersion string
	scratch      sync.Pool // *[MaxTokenLength]byte: material handed to the hasher
}

// check compares t's material with the digest of k (the dummy digest when
// k is nil) and reports ErrInvalid on a mismatch.
func (d *digests) check(t Token, k *Key) error {
	digest, version := d.dummy, d.dummyVersion
	if k != nil {
		digest, version = k.Hash, k.HashVersion
	}
	switch h := d.hasher.(type) {
	case *hmacHasher: // the hashers of this package only read the material
		ok, err := h.Compare(readOnly(t.material), digest, version)
		return verdict(ok, err, t.ID, k)
	case sha256Hasher:
		ok, err := h.Compare(readOnly(t.material), digest, version)
		return verdict(ok, err, t.ID, k)
	}
	buf, _ := d.scratch.Get().(*[MaxTokenLength]byte)
	if buf == nil {
		buf = new([MaxTokenLength]byte)
	}
	ok, err := d.hasher.Compare(append(buf[:0], t.material...), digest, version)
	d.scratch.Put(buf)
	return verdict(ok, err, t.ID, k)
}
