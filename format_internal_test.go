package apikey

import "testing"

// isBase62 agrees with the alphabet for every byte at every position of
// the eight-byte words and of the tail.
func TestIsBase62EveryByte(t *testing.T) {
	t.Parallel()
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	valid := [256]bool{}
	for i := 0; i < len(alphabet); i++ {
		valid[alphabet[i]] = true
	}
	base := []byte("Ab0Zz9aB1cD2eF3gH4iJ5kL6")
	for pos := range len(base) {
		for c := range 256 {
			b := append([]byte(nil), base...)
			b[pos] = byte(c)
			if got := isBase62(string(b)); got != valid[c] {
				t.Fatalf("byte %#x at %d: isBase62 = %v", c, pos, got)
			}
		}
	}
	if !isBase62("") || !isBase62(alphabet) {
		t.Fatal("valid strings refused")
	}
}
