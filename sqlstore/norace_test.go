//go:build !race

package sqlstore_test

// raceEnabled reports whether the race detector is on, which makes the
// conformance races several times slower.
const raceEnabled = false
