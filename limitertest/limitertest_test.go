package limitertest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/gokeys/apikey/limitertest"
)

func TestClock(t *testing.T) {
	t.Parallel()
	c := limitertest.NewClock(limitertest.Start())
	assert.Equal(t, limitertest.Start(), c.Now())

	type move struct {
		now time.Time
		d   time.Duration
	}
	var moves []move
	c.OnMove(func(now time.Time, d time.Duration) { moves = append(moves, move{now, d}) })

	c.Advance(time.Second)
	assert.Equal(t, limitertest.Start().Add(time.Second), c.Now())
	earlier := limitertest.Start().Add(-time.Hour)
	c.Set(earlier)
	assert.Equal(t, earlier, c.Now())
	assert.Equal(t, []move{
		{limitertest.Start().Add(time.Second), time.Second},
		{earlier, -time.Hour - time.Second},
	}, moves)
}
