package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// delayProxy is a TCP proxy that delays every chunk of bytes by a fixed
// time in each direction, so that a local Redis answers as a distant one
// would: a round trip costs twice the delay more. It delays, it does not
// throttle: chunks read while others wait are forwarded each at its own
// time, in order.
type delayProxy struct {
	ln     net.Listener
	target string
	delay  time.Duration
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

// startProxy listens on a spare local port and forwards to target, until
// the test ends.
func startProxy(t testing.TB, target string, delay time.Duration) *delayProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &delayProxy{ln: ln, target: target, delay: delay}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's address.
func (p *delayProxy) Addr() string { return p.ln.Addr().String() }

func (p *delayProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		// Dialled aside, so that many clients connecting at once are
		// accepted at once.
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			// Both ends are closed once both directions ended, so that a
			// long run does not run out of descriptors.
			var both sync.WaitGroup
			p.wg.Add(2)
			both.Go(func() { p.pipe(c, s) })
			both.Go(func() { p.pipe(s, c) })
			both.Wait()
			_ = c.Close()
			_ = s.Close()
		}()
	}
}

// chunk is bytes read and the time to write them.
type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst, each chunk delay after it was read.
func (p *delayProxy) pipe(src, dst net.Conn) {
	defer p.wg.Done()
	ch := make(chan chunk, 4096)
	go func() {
		defer close(ch)
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				// A copy of what was read: a reply is tens of bytes.
				ch <- chunk{append([]byte(nil), buf[:n]...), time.Now().Add(p.delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		if d := time.Until(c.at); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	for range ch { // let the reader end
	}
}

func (p *delayProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestDelayProxy checks that a round trip through the proxy takes twice
// its delay more, and that bytes arrive whole and in order.
func TestDelayProxy(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	p := startProxy(t, ln.Addr().String(), time.Millisecond)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 4)
	for i := range 20 {
		start := time.Now()
		msg := []byte{byte(i), 1, 2, 3}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		if rtt := time.Since(start); rtt < 2*time.Millisecond {
			t.Fatalf("round trip %v through a proxy of 1 ms each way", rtt)
		}
		if string(buf) != string(msg) {
			t.Fatalf("got %v, sent %v", buf, msg)
		}
	}
}

// startProxyProcess runs a delayProxy to target in a process of its own
// (this test binary, running TestProxyProcess), so that the goroutines of
// a busy benchmark never delay its timers, and returns its address. The
// process ends with the test.
func startProxyProcess(t *testing.T, target string, delay time.Duration) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestProxyProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "APIKEY_BENCH_PROXY_TARGET="+target, "APIKEY_BENCH_PROXY_DELAY="+delay.String())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if addr, ok := strings.CutPrefix(sc.Text(), "proxy listening on "); ok {
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return addr
		}
	}
	t.Fatalf("the proxy process did not start: %v", sc.Err())
	return ""
}

// TestProxyProcess is the proxy process of startProxyProcess: it serves
// until its standard input closes.
func TestProxyProcess(t *testing.T) {
	target := os.Getenv("APIKEY_BENCH_PROXY_TARGET")
	if target == "" {
		t.Skip("the proxy process of startProxyProcess")
	}
	delay, err := time.ParseDuration(os.Getenv("APIKEY_BENCH_PROXY_DELAY"))
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, target, delay)
	fmt.Println("proxy listening on " + p.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
}
