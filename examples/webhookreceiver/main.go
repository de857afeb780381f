// Command webhookreceiver receives the webhooks of examples/server. It
// verifies each signature, drops a webhook id it has processed already,
// and prints the event.
//
//	go run ./examples/webhookreceiver -addr 127.0.0.1:9090 -secret "$SECRET" &
//	go run ./examples/server -webhook-url http://127.0.0.1:9090/hooks -webhook-secret "$SECRET"
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"sync"

	"github.com/gokeys/apikey/outbox"
	"github.com/gokeys/apikey/webhook"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9090", "listen address")
	secret := flag.String("secret", os.Getenv("APIKEY_WEBHOOK_SECRET"), "the signing secret of the webhooks (whsec_...)")
	flag.Parse()
	v, err := webhook.NewVerifier([]string{*secret}, webhook.VerifierOptions{})
	if err != nil {
		log.Fatal(err)
	}
	r := &receiver{v: v, seen: map[string]bool{}, handle: func(p outbox.Payload) {
		b, _ := json.Marshal(p.Data)
		log.Printf("%s at %s: %s", p.Type, p.Timestamp.Format("15:04:05"), b)
	}}
	log.Printf("receiving webhooks on http://%s/hooks", *addr)
	log.Fatal(http.ListenAndServe(*addr, r))
}

// receiver verifies, deduplicates and handles webhooks.
type receiver struct {
	v      *webhook.Verifier
	handle func(outbox.Payload)

	mu   sync.Mutex
	seen map[string]bool // webhook ids processed; keep them a few days in a real store
}

// ServeHTTP answers 2xx once the event is processed, so that the sender
// stops retrying. Anything else makes it retry with backoff.
func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, outbox.MaxPayload))
	if err != nil {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	// Verify the raw body, before decoding it: within 5 minutes of now,
	// signed with the secret (HMAC-SHA256, compared in constant time).
	if err := rc.v.Verify(r.Header, body); err != nil {
		http.Error(w, "invalid signature", http.StatusUnauthorized)
		return
	}
	// Delivery is at least once: the same webhook id may come again.
	id := r.Header.Get("webhook-id")
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.seen[id] {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var p outbox.Payload
	if err := json.Unmarshal(body, &p); err != nil {
		http.Error(w, "not an event", http.StatusBadRequest)
		return
	}
	rc.handle(p)
	rc.seen[id] = true
	w.WriteHeader(http.StatusNoContent)
}
