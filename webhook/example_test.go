package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/outbox"
	"github.com/gokeys/apikey/webhook"
)

// receiver is a webhook endpoint: it verifies the signature on the raw
// body, drops a webhook id it has processed already, then decodes the
// event. A Dispatcher delivers several events at once, so the handler
// guards seen with a mutex.
func receiver(v *webhook.Verifier, seen map[string]bool, handle func(outbox.Payload)) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, outbox.MaxPayload))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if err := v.Verify(r.Header, body); err != nil {
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		id := r.Header.Get("webhook-id")
		mu.Lock()
		defer mu.Unlock()
		if seen[id] { // delivery is at least once: acknowledge a repeat again
			return
		}
		var p outbox.Payload
		if err := json.Unmarshal(body, &p); err != nil {
			http.Error(w, "not an event", http.StatusBadRequest)
			return
		}
		handle(p)
		seen[id] = true
	})
}

func Example() {
	ctx := context.Background()
	secret := webhook.NewSecret() // give it to the receiver once; keep it out of the code

	// The receiver's side.
	v, err := webhook.NewVerifier([]string{secret}, webhook.VerifierOptions{})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(receiver(v, map[string]bool{}, func(p outbox.Payload) {
		fmt.Println(p.Type, p.Data.Key.Owner)
	}))
	defer srv.Close()

	// The service's side: its Manager writes events with each change, a
	// Dispatcher delivers them.
	store := memstore.New()
	m, err := apikey.New(store, apikey.Options{Outbox: &outbox.Policy{}})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(ctx)
	d, err := webhook.New(store, webhook.Options{
		Endpoints: []webhook.Endpoint{{URL: srv.URL, Secrets: []string{secret}}},
	})
	if err != nil {
		log.Fatal(err)
	}
	_, k, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice"})
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Revoke(ctx, k.ID); err != nil {
		log.Fatal(err)
	}
	// In a service: go d.Run(ctx). Here, one round.
	if _, err := d.Poll(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(d.Stats().Delivered, "delivered")
	// Unordered output:
	// key.created alice
	// key.revoked alice
	// 2 delivered
}

func ExampleVerifier() {
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	v, err := webhook.NewVerifier([]string{secret}, webhook.VerifierOptions{})
	if err != nil {
		log.Fatal(err)
	}
	body := []byte(`{"type":"key.revoked","timestamp":"2026-05-01T12:00:00Z","data":{"key":{"id":"4f8Gq2Lx9TbN0cRw"}}}`)
	now := time.Now()
	h := http.Header{}
	h.Set("webhook-id", "msg_example")
	h.Set("webhook-timestamp", fmt.Sprint(now.Unix()))
	sig, _ := webhook.Sign("msg_example", now, body, secret) // what the sender does
	h.Set("webhook-signature", sig)

	fmt.Println(v.Verify(h, body))
	fmt.Println(v.Verify(h, append(body, ' ')))
	// Output:
	// <nil>
	// webhook: no valid signature
}
