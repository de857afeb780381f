package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The headers of the Standard Webhooks specification.
const (
	HeaderID        = "Webhook-Id"
	HeaderTimestamp = "Webhook-Timestamp"
	HeaderSignature = "Webhook-Signature"
)

// Errors of Verify, and of a secret that is not one.
var (
	// ErrMissingHeader reports a request without webhook-id,
	// webhook-timestamp or webhook-signature.
	ErrMissingHeader = errors.New("webhook: missing webhook header")
	// ErrTimestamp reports a webhook-timestamp that is not a Unix time in
	// seconds, or is further from now than the tolerance. It is a replay,
	// or a clock far off.
	ErrTimestamp = errors.New("webhook: timestamp outside the tolerance")
	// ErrSignature reports a request none of whose signatures is that of
	// the body under any of the secrets.
	ErrSignature = errors.New("webhook: no valid signature")
	// ErrSecret reports a secret that is not "whsec_" followed by the
	// base64 of 24 to 64 bytes.
	ErrSecret = errors.New("webhook: invalid secret")
)

// secretPrefix starts every secret, as the specification serialises them.
const secretPrefix = "whsec_"

// Bounds of a secret's key, in bytes, as the specification sets them.
const (
	minSecret = 24
	maxSecret = 64
)

// NewSecret returns a new random secret of 32 bytes, in the form
// "whsec_<base64>" that Endpoint.Secrets and NewVerifier take.
func NewSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails
	return secretPrefix + base64.StdEncoding.EncodeToString(b)
}

// parseSecret returns the HMAC key of a secret "whsec_<base64>".
func parseSecret(s string) ([]byte, error) {
	enc, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: it must start with %q", ErrSecret, secretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(enc)
	}
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: not base64 after %q", ErrSecret, secretPrefix)
	case len(key) < minSecret || len(key) > maxSecret:
		return nil, fmt.Errorf("%w: %d bytes, want %d to %d", ErrSecret, len(key), minSecret, maxSecret)
	}
	return key, nil
}

// parseSecrets returns the keys of secrets, at least one.
func parseSecrets(secrets []string) ([][]byte, error) {
	if len(secrets) == 0 {
		return nil, fmt.Errorf("%w: none given", ErrSecret)
	}
	keys := make([][]byte, len(secrets))
	for i, s := range secrets {
		k, err := parseSecret(s)
		if err != nil {
			return nil, fmt.Errorf("secret %d: %w", i+1, err)
		}
		keys[i] = k
	}
	return keys, nil
}

// mac returns the HMAC-SHA256 of "id.timestamp.body" under key.
func mac(key []byte, id, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// signature returns the webhook-signature value of one attempt: one
// "v1,<base64>" per key, separated by spaces.
func signature(keys [][]byte, id, ts string, body []byte) string {
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("v1,")
		b.WriteString(base64.StdEncoding.EncodeToString(mac(k, id, ts, body)))
	}
	return b.String()
}

// Sign returns the webhook-signature value of a webhook with the given
// id, timestamp and body. It holds one "v1,<base64 HMAC-SHA256 of
// id.timestamp.body>" per secret, space-separated. A receiver holding any
// one of the secrets verifies it, which makes secret rotation possible. A
// malformed secret gives ErrSecret.
func Sign(id string, ts time.Time, body []byte, secrets ...string) (string, error) {
	keys, err := parseSecrets(secrets)
	if err != nil {
		return "", err
	}
	return signature(keys, id, strconv.FormatInt(ts.Unix(), 10), body), nil
}

// DefaultTolerance is how far a webhook-timestamp may be from the
// receiver's clock when VerifierOptions.Tolerance is 0.
const DefaultTolerance = 5 * time.Minute

// VerifierOptions configures a Verifier. The zero value checks
// timestamps within DefaultTolerance of time.Now.
type VerifierOptions struct {
	// Tolerance is how far, either way, a webhook-timestamp may be from
	// now. It is DefaultTolerance when 0. A replayed request older than
	// that is refused.
	Tolerance time.Duration
	// Now returns the current time, time.Now when nil.
	Now func() time.Time
}

// Verifier checks the signature of webhooks a receiver gets. It is safe
// for concurrent use.
type Verifier struct {
	keys      [][]byte
	tolerance time.Duration
	now       func() time.Time
}

// NewVerifier returns a Verifier that accepts a webhook signed with any
// of secrets ("whsec_<base64>"). During a rotation, give the new secret
// and the old one. A malformed secret, or none, gives an error wrapping
// ErrSecret.
func NewVerifier(secrets []string, opts VerifierOptions) (*Verifier, error) {
	keys, err := parseSecrets(secrets)
	if err != nil {
		return nil, err
	}
	v := &Verifier{keys: keys, tolerance: opts.Tolerance, now: opts.Now}
	if v.tolerance <= 0 {
		v.tolerance = DefaultTolerance
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// Verify checks a webhook's headers and raw body. All three headers must
// be present (ErrMissingHeader). The webhook-timestamp must be within the
// tolerance of now (ErrTimestamp). One of the "v1," signatures of
// webhook-signature must equal the HMAC-SHA256 of "id.timestamp.body"
// under one of the secrets, compared in constant time (ErrSignature).
// Verify the body as received, before decoding it, since JSON encoded
// again may differ. Then use webhook-id to drop a webhook already
// processed, since delivery is at least once.
func (v *Verifier) Verify(h http.Header, body []byte) error {
	id, ts, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || ts == "" || sigs == "" {
		return ErrMissingHeader
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrTimestamp
	}
	now := v.now()
	if t := time.Unix(sec, 0); t.Before(now.Add(-v.tolerance)) || t.After(now.Add(v.tolerance)) {
		return ErrTimestamp
	}
	want := make([][]byte, len(v.keys))
	for i, k := range v.keys {
		want[i] = mac(k, id, ts, body)
	}
	ok := false
	for sig := range strings.FieldsSeq(sigs) {
		b64, isV1 := strings.CutPrefix(sig, "v1,")
		if !isV1 {
			continue // another scheme (v1a): not ours
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			continue
		}
		for _, w := range want {
			if hmac.Equal(got, w) {
				ok = true
			}
		}
	}
	if !ok {
		return ErrSignature
	}
	return nil
}
