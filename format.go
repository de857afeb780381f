package apikey

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"strings"
	"unsafe"
)

// Token grammar
//
//	token    = prefix "_" id secret checksum
//	prefix   = 1*32( "a"-"z" / "0"-"9" / "_" )   ; starts with a letter, no "__", no trailing "_"
//	id       = 16base62                            ; random, about 95 bits
//	secret   = n*base62                            ; n = ceil(SecretBits / log2(62)), 43 for 256 bits
//	checksum = 6base62                             ; CRC-32 (IEEE) of everything before it, big-endian base62, zero-padded
//	base62   = "0"-"9" / "A"-"Z" / "a"-"z"
//
// With the default prefix "sk" and 256-bit secrets a token is 68 characters.
// No token is ever longer than MaxTokenLength.
const (
	// defaultPrefix is the prefix used when Options.Prefix is empty.
	defaultPrefix = "sk"
	// maxPrefixLength is the longest accepted prefix.
	maxPrefixLength = 32
	// defaultSecretBits is the entropy of a secret when Options.SecretBits is 0.
	defaultSecretBits = 256
	// minSecretBits is the least entropy accepted for a secret.
	minSecretBits = 128
	// maxSecretBits is the most entropy accepted for a secret.
	maxSecretBits   = 512
	maxSecretLength = 86 // secretLength(maxSecretBits)
	hintSuffix      = 4
)

const base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Token is a parsed token. Its fields are substrings of the parsed text.
// Token values hold the secret. Never log or store them.
type Token struct {
	// Prefix is the token's prefix, without the separating underscore.
	Prefix string
	// ID is the public key id.
	ID string
	// Secret is the secret part.
	Secret string

	material string // id followed by secret: what the hasher sees
	raw      string
}

// String returns "[REDACTED]" so that a Token printed by mistake leaks nothing.
func (Token) String() string { return "[REDACTED]" }

// GoString returns "[REDACTED]".
func (Token) GoString() string { return "[REDACTED]" }

// Hint returns the display hint of the token. It is the prefix and the
// last four characters, which belong to the checksum and reveal nothing of
// the secret.
func (t Token) Hint() string { return hint(t.Prefix, t.raw) }

// Format is the token grammar of one secret size and one prefix (which
// New and Compose use), optionally accepting further prefixes in Parse and
// Scan (see WithPrefixes). The zero value is not usable. Build one with
// NewFormat. A Format is immutable and safe for concurrent use.
type Format struct {
	prefix    string
	secretLen int
	more      []string // further prefixes Parse accepts; never appended to
}

// NewFormat returns the Format for prefix ("sk" when empty) and secrets of
// secretBits bits (256 when 0, between 128 and 512). The prefix must be
// 1 to 32 characters of lowercase letters, digits and underscores, start
// with a letter, and neither end with nor repeat an underscore.
func NewFormat(prefix string, secretBits int) (Format, error) {
	if prefix == "" {
		prefix = defaultPrefix
	}
	if secretBits == 0 {
		secretBits = defaultSecretBits
	}
	if err := validPrefix(prefix); err != nil {
		return Format{}, err
	}
	if secretBits < minSecretBits || secretBits > maxSecretBits {
		return Format{}, fmt.Errorf("%w: secret bits %d outside [%d, %d]", ErrInvalidOptions, secretBits, minSecretBits, maxSecretBits)
	}
	return Format{prefix: prefix, secretLen: secretLength(secretBits)}, nil
}

func validPrefix(p string) error {
	bad := len(p) == 0 || len(p) > maxPrefixLength || p[0] < 'a' || p[0] > 'z' ||
		p[len(p)-1] == '_' || strings.Contains(p, "__")
	for i := 0; i < len(p) && !bad; i++ {
		c := p[i]
		bad = !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_')
	}
	if bad {
		return fmt.Errorf("%w: prefix must be 1-%d of [a-z0-9_], start with a letter, no trailing or doubled '_'", ErrInvalidOptions, maxPrefixLength)
	}
	return nil
}

// secretLength is the number of base62 characters that carry bits of entropy.
func secretLength(bits int) int { return int(math.Ceil(float64(bits) / math.Log2(62))) }

// Prefix returns the prefix of tokens of this format, the one New and
// Compose use.
func (f Format) Prefix() string { return f.prefix }

// Prefixes returns every prefix Parse accepts, Prefix first.
func (f Format) Prefixes() []string { return append([]string{f.prefix}, f.more...) }

// WithPrefixes returns a Format that also parses and scans tokens of the
// given prefixes (same secret size). New and Compose keep using f's
// Prefix. Parse reports in Token.Prefix which prefix a token carries. A
// prefix that breaks the grammar of NewFormat or is given twice gives an
// error wrapping ErrInvalidOptions.
func (f Format) WithPrefixes(prefixes ...string) (Format, error) {
	all := f.Prefixes()
	for _, p := range prefixes {
		if err := validPrefix(p); err != nil {
			return Format{}, err
		}
		for _, q := range all {
			if p == q {
				return Format{}, fmt.Errorf("%w: prefix %q given twice", ErrInvalidOptions, p)
			}
		}
		all = append(all, p)
	}
	f.more = all[1:len(all):len(all)]
	return f, nil
}

// single returns the Format of f's secret size and prefix p only.
func (f Format) single(p string) Format { return Format{prefix: p, secretLen: f.secretLen} }

// prefixOf returns the accepted prefix token carries, judged by its
// length and leading characters, or f.prefix when none fits.
func (f Format) prefixOf(token string) string {
	n := len(token) - (1 + IDLength + f.secretLen + ChecksumLength)
	if n <= 0 || n == len(f.prefix) && token[:n] == f.prefix {
		return f.prefix
	}
	for _, p := range f.more {
		if len(p) == n && token[:n] == p {
			return p
		}
	}
	return f.prefix
}

// Len returns the length of every token of this format's Prefix.
func (f Format) Len() int { return len(f.prefix) + 1 + IDLength + f.secretLen + ChecksumLength }

// NewID returns a random key id drawn from crypto/rand.
func NewID() string { return randomBase62(IDLength) }

// New returns a fresh token with a random id and secret, and its parsed form.
func (f Format) New() (string, Token) {
	return f.build(NewID(), randomBase62(f.secretLen))
}

// Compose returns the token of this format with the given id and secret,
// adding the checksum. For tests and for importing keys made elsewhere. The
// id must be IDLength and the secret the format's length of base62.
func (f Format) Compose(id, secret string) (string, error) {
	if len(id) != IDLength || len(secret) != f.secretLen || !isBase62(id) || !isBase62(secret) {
		return "", ErrMalformed
	}
	s, _ := f.build(id, secret)
	return s, nil
}

// base62Values maps a byte to its base62 value, or to 0xff (high bit set)
// for a byte outside the alphabet. It costs one load per byte, no branch.
const base62Values = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\xff\xff\xff\xff\xff\xff" +
	"\xff\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18" +
	"\x19\x1a\x1b\x1c\x1d\x1e\x1f\x20\x21\x22\x23\xff\xff\xff\xff\xff" +
	"\xff\x24\x25\x26\x27\x28\x29\x2a\x2b\x2c\x2d\x2e\x2f\x30\x31\x32" +
	"\x33\x34\x35\x36\x37\x38\x39\x3a\x3b\x3c\x3d\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"

func isBase62(s string) bool {
	// Eight bytes at a time. A byte is base62 when it is ASCII and in one
	// of the ranges 0-9, A-Z, a-z. SWAR range tests find it, with no carry
	// between bytes since every byte is below 0x80 when they count.
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	in := func(x uint64, lo, hi byte) uint64 {
		return (x + (0x80-uint64(lo))*ones) &^ (x + (0x7f-uint64(hi))*ones)
	}
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(s[i:]), 8))
		if x&highs != 0 || (in(x, '0', '9')|in(x, 'A', 'Z')|in(x, 'a', 'z'))&highs != highs {
			return false
		}
	}
	var bad byte
	for ; i < len(s); i++ {
		bad |= base62Values[s[i]]
	}
	return bad&0x80 == 0
}

func (f Format) build(id, secret string) (string, Token) {
	var b strings.Builder
	b.Grow(f.Len())
	b.WriteString(f.prefix)
	b.WriteByte('_')
	b.WriteString(id)
	b.WriteString(secret)
	var sum [ChecksumLength]byte
	encodeChecksum(sum[:], crc32String(b.String()))
	b.Write(sum[:])
	s := b.String()
	t, err := f.Parse(s)
	if err != nil {
		panic("apikey: generated token does not parse: " + err.Error())
	}
	return s, t
}

// Parse checks token against the grammar and returns its parts. It rejects
// a prefix the format does not accept, a wrong length, characters outside
// base62 and a bad checksum with ErrMalformed, without allocating and
// before any hashing or store access. Token.Prefix is the prefix the token
// carries (one of Prefixes). The checksum covers it, so a token cannot be
// moved to another prefix without the secret being checked against the
// key, which is bound to its own prefix (see Manager.Verify).
func (f Format) Parse(token string) (Token, error) {
	prefix := f.prefix
	if f.more != nil {
		prefix = f.prefixOf(token)
	}
	p := len(prefix)
	if len(token) != p+1+IDLength+f.secretLen+ChecksumLength || p == 0 {
		return Token{}, ErrMalformed
	}
	if token[:p] != prefix || token[p] != '_' {
		return Token{}, ErrMalformed
	}
	body := token[p+1:]
	if !isBase62(body) {
		return Token{}, ErrMalformed
	}
	n := len(token) - ChecksumLength
	want, ok := decodeChecksum(token[n:])
	if !ok || crc32String(token[:n]) != want {
		return Token{}, ErrMalformed
	}
	return Token{
		Prefix:   prefix,
		ID:       body[:IDLength],
		Secret:   body[IDLength : len(body)-ChecksumLength],
		material: body[:len(body)-ChecksumLength],
		raw:      token,
	}, nil
}

func hint(prefix, token string) string {
	if len(token) < hintSuffix {
		return prefix + "_..."
	}
	return prefix + "_..." + token[len(token)-hintSuffix:]
}

// crc32String computes the IEEE CRC-32 of s without copying it. The
// checksum only reads its input, so a byte view of the string is safe.
func crc32String(s string) uint32 {
	return crc32.ChecksumIEEE(unsafe.Slice(unsafe.StringData(s), len(s)))
}

func encodeChecksum(dst []byte, v uint32) {
	for i := ChecksumLength - 1; i >= 0; i-- {
		dst[i] = base62Alphabet[v%62]
		v /= 62
	}
}

func decodeChecksum(s string) (uint32, bool) {
	var v uint64
	var bad byte
	for i := 0; i < len(s); i++ {
		d := base62Values[s[i]]
		bad |= d
		v = v*62 + uint64(d)
	}
	return uint32(v), bad&0x80 == 0 && v <= math.MaxUint32
}

// value62 returns the base62 value of c, or -1.
func value62(c byte) int8 { return int8(base62Values[c]) }

// randomBase62 returns n uniformly random base62 characters from
// crypto/rand, by rejection sampling of 6-bit values.
func randomBase62(n int) string {
	out := make([]byte, 0, n)
	var buf [64]byte
	for len(out) < n {
		rand.Read(buf[:]) // never fails (crypto/rand panics on failure)
		for _, b := range buf {
			if v := b & 63; v < 62 && len(out) < n {
				out = append(out, base62Alphabet[v])
			}
		}
	}
	return string(out)
}

// Sizes of tokens.
const (
	// IDLength is the length of every key id the Manager issues, in base62
	// characters.
	IDLength = 16
	// ChecksumLength is the length of a token's checksum, in base62
	// characters.
	ChecksumLength = 6
	// MaxTokenLength is the length of the longest token any configuration
	// produces. Longer input is rejected before it is looked at further.
	MaxTokenLength = maxPrefixLength + 1 + IDLength + maxSecretLength + ChecksumLength
)
