// Package fastclock reads the wall clock at half the cost of time.Now, for
// the request path.
//
// time.Now reads two clocks of the kernel, the wall clock and the
// monotonic one. A Clock reads only the monotonic clock, and adds the time
// elapsed since its anchor, a time.Now reading, to the anchor. The anchor
// is read again once a second. So a step of the wall clock (a manual
// change, an NTP step) shows in a Clock's readings within a second. A
// slewed wall clock shows at once, since the kernel slews the monotonic
// clock alike.
package fastclock

import (
	"sync/atomic"
	"time"
)

// reanchorAfter is how long an anchor serves.
const reanchorAfter = time.Second

// Clock reads the wall clock with one monotonic clock read. Build it
// with New. It is safe for concurrent use.
type Clock struct {
	anchor atomic.Pointer[time.Time] // a time.Now reading, monotonic clock included
}

// New returns a Clock anchored now.
func New() *Clock {
	c := &Clock{}
	c.reanchor()
	return c
}

// Now returns the current time, with a monotonic clock reading, as
// time.Now does.
func (c *Clock) Now() time.Time {
	a := c.anchor.Load()
	d := time.Since(*a)
	if d < 0 || d >= reanchorAfter {
		return c.reanchor()
	}
	return a.Add(d)
}

// reanchor reads time.Now, makes it the anchor and returns it.
func (c *Clock) reanchor() time.Time {
	t := time.Now()
	c.anchor.Store(&t)
	return t
}
