package leak_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/leak"
	"github.com/gokeys/apikey/memstore"
)

var testPepper = []apikey.Pepper{{Version: "1", Secret: []byte("0123456789abcdef0123456789abcdef")}}

// signer is one of GitHub's signing keys, made up for a test.
type signer struct {
	id   string
	priv *ecdsa.PrivateKey
}

func newSigner(t testing.TB) *signer {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	require.NoError(t, err)
	sum := sha256.Sum256(der)
	return &signer{id: hex.EncodeToString(sum[:]), priv: priv}
}

// sign returns the Github-Public-Key-Signature of body.
func (s *signer) sign(t testing.TB, body []byte) string {
	t.Helper()
	sum := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, s.priv, sum[:])
	require.NoError(t, err)
	return base64.StdEncoding.EncodeToString(sig)
}

// pem returns the public key in the document's form.
func (s *signer) pem(t testing.TB) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&s.priv.PublicKey)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// keysDocument renders the public keys document GitHub serves.
func keysDocument(t testing.TB, signers ...*signer) []byte {
	t.Helper()
	type key struct {
		KeyIdentifier string `json:"key_identifier"`
		Key           string `json:"key"`
		IsCurrent     bool   `json:"is_current"`
	}
	var doc struct {
		PublicKeys []key `json:"public_keys"`
	}
	for i, s := range signers {
		doc.PublicKeys = append(doc.PublicKeys, key{KeyIdentifier: s.id, Key: s.pem(t), IsCurrent: i == len(signers)-1})
	}
	b, err := json.Marshal(doc)
	require.NoError(t, err)
	return b
}

// keysServer serves the public keys of signers as GitHub's metadata
// endpoint does, and counts the requests.
type keysServer struct {
	*httptest.Server
	mu       sync.Mutex
	doc      []byte
	status   int
	requests atomic.Int64
}

func newKeysServer(t testing.TB, signers ...*signer) *keysServer {
	t.Helper()
	ks := &keysServer{doc: keysDocument(t, signers...), status: http.StatusOK}
	ks.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ks.requests.Add(1)
		ks.mu.Lock()
		doc, status := ks.doc, ks.status
		ks.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(doc)
	}))
	t.Cleanup(ks.Close)
	return ks
}

func (ks *keysServer) serve(t testing.TB, status int, signers ...*signer) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.status, ks.doc = status, keysDocument(t, signers...)
}

// match is one match of an alert, as GitHub sends it.
type match struct {
	Token  string `json:"token"`
	Type   string `json:"type"`
	URL    string `json:"url"`
	Source string `json:"source"`
}

// alertBody renders an alert for tokens, found in a file of a commit.
func alertBody(t testing.TB, tokens ...string) []byte {
	t.Helper()
	ms := make([]match, len(tokens))
	for i, tok := range tokens {
		ms[i] = match{Token: tok, Type: "gokeys_api_key", URL: "https://github.com/octo/app/blob/5c1e/config/.env", Source: "content"}
	}
	b, err := json.Marshal(ms)
	require.NoError(t, err)
	return b
}

// postAlert sends body to h, signed with s's key id and sig.
func postAlert(h http.Handler, body []byte, id, sig string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/github/secret-scanning", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if id != "" {
		req.Header.Set(leak.HeaderKeyID, id)
	}
	if sig != "" {
		req.Header.Set(leak.HeaderSignature, sig)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// feedback decodes the answer to an alert.
func feedback(t testing.TB, rec *httptest.ResponseRecorder) []leak.Feedback {
	t.Helper()
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var fb []leak.Feedback
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &fb))
	return fb
}

func hashOf(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// spyStore wraps a memstore (hiding its optional capabilities), counts
// the calls and writes made to it, and can hold every call until
// released.
type spyStore struct {
	apikey.Store
	calls, writes atomic.Int64
	fail          atomic.Bool
	gate          atomic.Pointer[chan struct{}]
}

func newSpy() *spyStore { return &spyStore{Store: memstore.New()} }

func (s *spyStore) before(write bool) error {
	s.calls.Add(1)
	if write {
		s.writes.Add(1)
	}
	if g := s.gate.Load(); g != nil {
		<-*g
	}
	if s.fail.Load() {
		return errStoreDown
	}
	return nil
}

// hold makes every call wait until the returned func is called.
func (s *spyStore) hold() (release func()) {
	g := make(chan struct{})
	s.gate.Store(&g)
	return func() { s.gate.Store(nil); close(g) }
}

type storeError string

func (e storeError) Error() string { return string(e) }

const errStoreDown = storeError("store down")

func (s *spyStore) Create(ctx context.Context, k *apikey.Key) error {
	if err := s.before(true); err != nil {
		return err
	}
	return s.Store.Create(ctx, k)
}

func (s *spyStore) Get(ctx context.Context, id string) (*apikey.Key, error) {
	if err := s.before(false); err != nil {
		return nil, err
	}
	return s.Store.Get(ctx, id)
}

func (s *spyStore) Update(ctx context.Context, k *apikey.Key) error {
	if err := s.before(true); err != nil {
		return err
	}
	return s.Store.Update(ctx, k)
}

func (s *spyStore) Delete(ctx context.Context, id string) error {
	if err := s.before(true); err != nil {
		return err
	}
	return s.Store.Delete(ctx, id)
}

func (s *spyStore) List(ctx context.Context, owner string, o apikey.ListOptions) ([]*apikey.Key, error) {
	if err := s.before(false); err != nil {
		return nil, err
	}
	return s.Store.List(ctx, owner, o)
}

func (s *spyStore) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	if err := s.before(true); err != nil {
		return err
	}
	return s.Store.MarkUsed(ctx, uses)
}

// hub is an in-memory Notifier channel: every notifier of one hub hears
// what any of them publishes, as instances over Redis or PostgreSQL do.
type hub struct {
	mu   sync.Mutex
	subs map[int]chan string
	next int
}

func newHub() *hub { return &hub{subs: map[int]chan string{}} }

// subscribers returns how many instances are subscribed to h.
func (h *hub) subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// notifier returns one instance's Notifier on h.
func (h *hub) notifier() apikey.Notifier { return hubNotifier{h} }

type hubNotifier struct{ h *hub }

func (n hubNotifier) Publish(_ context.Context, id string) error {
	n.h.mu.Lock()
	defer n.h.mu.Unlock()
	for _, c := range n.h.subs {
		c <- id
	}
	return nil
}

func (n hubNotifier) Subscribe(ctx context.Context, changed func(id string)) error {
	c := make(chan string, 1024)
	n.h.mu.Lock()
	i := n.h.next
	n.h.next++
	n.h.subs[i] = c
	n.h.mu.Unlock()
	defer func() {
		n.h.mu.Lock()
		delete(n.h.subs, i)
		n.h.mu.Unlock()
	}()
	changed("")
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case id := <-c:
			changed(id)
		}
	}
}

// newManager returns a Manager over store with the test pepper and the
// sk_live prefix, closed when the test ends.
func newManager(t testing.TB, store apikey.Store, opts apikey.Options) *apikey.Manager {
	t.Helper()
	opts.Peppers = testPepper
	if opts.Prefix == "" {
		opts.Prefix = "sk_live"
	}
	m, err := apikey.New(store, opts)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

func issue(t testing.TB, m *apikey.Manager, owner string) (string, *apikey.Key) {
	t.Helper()
	token, k, err := m.Issue(context.Background(), apikey.IssueParams{Owner: owner})
	require.NoError(t, err)
	return token, k
}

// unknownToken returns a token of m's format, checksum and all, of no
// key.
func unknownToken(t testing.TB, m *apikey.Manager) string {
	t.Helper()
	tok, _ := m.Format().New()
	return tok
}

// events is a slog.Handler that keeps the "apikey" group of each record.
type events struct {
	mu   sync.Mutex
	recs []map[string]string
}

func (l *events) Enabled(context.Context, slog.Level) bool { return true }
func (l *events) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *events) WithGroup(string) slog.Handler            { return l }

func (l *events) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "apikey" {
			e := map[string]string{}
			for _, f := range a.Value.Resolve().Group() {
				e[f.Key] = f.Value.String()
			}
			l.mu.Lock()
			l.recs = append(l.recs, e)
			l.mu.Unlock()
		}
		return true
	})
	return nil
}

// of returns the events of type typ.
func (l *events) of(typ string) []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, e := range l.recs {
		if e["event"] == typ {
			out = append(out, e)
		}
	}
	return out
}
