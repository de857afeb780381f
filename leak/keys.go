package leak

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// DefaultKeysURL is where GitHub publishes the public keys that sign its
// secret scanning alerts.
const DefaultKeysURL = "https://api.github.com/meta/public_keys/secret_scanning"

// maxKeysDocument is the most bytes of the public keys document read.
const maxKeysDocument = 1 << 20

// fetchTimeout bounds the default fetch of the public keys document.
const fetchTimeout = 10 * time.Second

// Errors of the signature check, each answered with its own status.
var (
	// errUnsigned means a header is missing or is not what GitHub sends.
	errUnsigned = errors.New("leak: request not signed")
	// errBadSignature means the signature does not verify, or names a key
	// GitHub does not publish.
	errBadSignature = errors.New("leak: bad signature")
	// errKeysUnavailable means the public keys could not be fetched, so
	// the signature could not be checked.
	errKeysUnavailable = errors.New("leak: GitHub's public keys are unavailable")
)

// keysDocument is the document at DefaultKeysURL.
type keysDocument struct {
	PublicKeys []struct {
		KeyIdentifier string `json:"key_identifier"`
		Key           string `json:"key"`
		IsCurrent     bool   `json:"is_current"`
	} `json:"public_keys"`
}

// keyring caches GitHub's public keys by identifier. It fetches the
// document when a request names a key it does not hold, or when its copy
// is older than maxAge. It never fetches more than once per interval,
// however many requests ask. So a flood of unknown identifiers costs one
// fetch per interval. A failed fetch keeps the keys it had. It is safe for
// concurrent use.
type keyring struct {
	url      string
	fetch    func(ctx context.Context, url string) ([]byte, error)
	interval time.Duration
	maxAge   time.Duration
	now      func() time.Time

	fetching sync.Mutex // one fetch at a time

	mu     sync.Mutex
	keys   map[string]*ecdsa.PublicKey
	loaded time.Time // when keys were fetched; zero: never
	tried  time.Time // the last fetch attempt; zero: never
}

// key returns the public key named id. An id it does not hold is
// errKeysUnavailable while no fetch is allowed. The key may be new, so the
// sender should retry. Such an id is errBadSignature once a fetch made for
// it did not find it either. A stale key is used while a fetch fails or is
// not allowed yet.
func (r *keyring) key(ctx context.Context, id string) (*ecdsa.PublicKey, error) {
	if k, fresh := r.lookup(id); k != nil && fresh {
		return k, nil
	}
	r.fetching.Lock()
	defer r.fetching.Unlock()
	k, fresh := r.lookup(id) // a fetch may have landed meanwhile
	if k != nil && fresh {
		return k, nil
	}
	r.mu.Lock()
	now := r.now()
	due := r.tried.IsZero() || now.Sub(r.tried) >= r.interval
	if due {
		r.tried = now
	}
	r.mu.Unlock()
	if !due {
		if k != nil {
			return k, nil
		}
		return nil, errKeysUnavailable
	}
	keys, err := r.load(ctx)
	if err != nil {
		if k != nil {
			return k, nil // keep trusting what GitHub published until a fetch succeeds
		}
		return nil, fmt.Errorf("%w: %w", errKeysUnavailable, err)
	}
	r.mu.Lock()
	r.keys, r.loaded = keys, now
	r.mu.Unlock()
	if k := keys[id]; k != nil {
		return k, nil
	}
	return nil, errBadSignature
}

// retryAfter is how long until the next fetch is allowed.
func (r *keyring) retryAfter() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return max(r.interval-r.now().Sub(r.tried), time.Second)
}

// lookup returns the cached key id and whether the cache is fresh.
func (r *keyring) lookup(id string) (*ecdsa.PublicKey, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.keys[id], r.now().Sub(r.loaded) < r.maxAge
}

// load fetches and parses the document. Keys that are not ECDSA P-256
// public keys in PEM are left out. A document without any is an error.
func (r *keyring) load(ctx context.Context) (map[string]*ecdsa.PublicKey, error) {
	body, err := r.fetch(ctx, r.url)
	if err != nil {
		return nil, err
	}
	var doc keysDocument
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("public keys document: %w", err)
	}
	keys := make(map[string]*ecdsa.PublicKey, len(doc.PublicKeys))
	for _, pk := range doc.PublicKeys {
		if k := parseKey(pk.Key); k != nil && pk.KeyIdentifier != "" {
			keys[pk.KeyIdentifier] = k
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("public keys document: no ECDSA P-256 key")
	}
	return keys, nil
}

// parseKey parses a PEM "PUBLIC KEY" holding an ECDSA P-256 key, or
// returns nil.
func parseKey(s string) *ecdsa.PublicKey {
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return nil
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil
	}
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil
	}
	return k
}

// verify checks the signature GitHub sent with body. sig is the base64
// of an ASN.1 ECDSA signature of body's SHA-256, by the key named id.
func (r *keyring) verify(ctx context.Context, id, sig string, body []byte) error {
	if !validKeyID(id) || sig == "" || len(sig) > 256 {
		return errUnsigned
	}
	der, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return errBadSignature
	}
	k, err := r.key(ctx, id)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	if !ecdsa.VerifyASN1(k, sum[:], der) {
		return errBadSignature
	}
	return nil
}

// validKeyID reports whether id looks like a key identifier (GitHub's are
// 64 hex digits). Such an id is 1 to 128 letters, digits, '-' or '_'.
// Anything else is refused without a fetch.
func validKeyID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// httpFetch is the default fetch. It is a GET of url that must answer 200
// with at most 1 MiB, within 10 seconds.
func httpFetch(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET public keys: %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeysDocument+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxKeysDocument {
		return nil, errors.New("GET public keys: document over 1 MiB")
	}
	return body, nil
}
