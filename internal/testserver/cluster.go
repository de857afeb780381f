package testserver

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RedisClusterAddrs returns the node addresses of the shared Redis Cluster
// named by APIKEY_TEST_REDIS_CLUSTER (comma-separated host:port, as
// .ci/redis-cluster prints them), once one of them reports
// cluster_state:ok. It skips the test when the variable is unset, and when
// the cluster is unreachable or not ok, unless CI=true, where it fails.
// Tests must never stop or flush the shared cluster. StartRedisCluster
// starts one of their own.
func RedisClusterAddrs(t testing.TB) []string {
	t.Helper()
	v := os.Getenv("APIKEY_TEST_REDIS_CLUSTER")
	if v == "" {
		t.Skip("APIKEY_TEST_REDIS_CLUSTER is not set (start one with .ci/redis-cluster)")
	}
	addrs := strings.Split(v, ",")
	var err error
	for _, addr := range addrs {
		var info string
		if info, err = Command(addr, "CLUSTER", "INFO"); err == nil {
			if strings.Contains(info, "cluster_state:ok") {
				return addrs
			}
			err = fmt.Errorf("%s: cluster_state is not ok", addr)
		}
	}
	unavailable(t, "the Redis Cluster of APIKEY_TEST_REDIS_CLUSTER (%s) is not usable: %v", v, err)
	return nil
}

// RedisCluster is a private Redis Cluster of three masters and three
// replicas, each redis-server on a spare port, without persistence, with
// cluster-require-full-coverage off.
type RedisCluster struct {
	t     testing.TB
	bin   string
	dir   string
	Nodes []*ClusterNode
	// NodeTimeout is the cluster-node-timeout of every node.
	NodeTimeout time.Duration
}

// ClusterNode is one redis-server of a RedisCluster.
type ClusterNode struct {
	Addr string // host:port
	dir  string
	cmd  *exec.Cmd
}

// StartRedisCluster starts six redis-server in cluster mode on spare ports
// with cluster-node-timeout nodeTimeout, joins them with redis-cli
// --cluster create (one replica per master) and waits until every node
// reports cluster_state:ok. The cluster is killed when the test ends.
func StartRedisCluster(t testing.TB, nodeTimeout time.Duration) *RedisCluster {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		unavailable(t, "redis-server is not installed")
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		unavailable(t, "redis-cli is not installed")
	}
	dir, err := os.MkdirTemp("", "apikey-redis-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	c := &RedisCluster{t: t, bin: bin, dir: dir, NodeTimeout: nodeTimeout}
	t.Cleanup(func() {
		for _, n := range c.Nodes {
			c.kill(n)
		}
		os.RemoveAll(dir)
	})
	start := time.Now()
	args := []string{"--cluster", "create"}
	for i := range 6 {
		n := &ClusterNode{Addr: "127.0.0.1:" + strconv.Itoa(SparePort(t)), dir: filepath.Join(dir, strconv.Itoa(i))}
		if err := os.Mkdir(n.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		c.Nodes = append(c.Nodes, n)
		c.Start(n)
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("testserver: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitOK(30 * time.Second)
	t.Logf("testserver: started a Redis Cluster of 6 nodes (%s, cluster-node-timeout %v) in %v",
		strings.Join(c.Addrs(), ","), nodeTimeout, since(start))
	return c
}

// Addrs returns the address of every node.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// Node returns the node at addr, or nil.
func (c *RedisCluster) Node(addr string) *ClusterNode {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// Start starts n (again) on its port, with its nodes.conf, so that it
// rejoins the cluster, and waits until it accepts connections.
func (c *RedisCluster) Start(n *ClusterNode) {
	c.t.Helper()
	_, port, _ := net.SplitHostPort(n.Addr)
	n.cmd = exec.Command(c.bin, "--port", port, "--bind", "127.0.0.1", "--dir", n.dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
		"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.FormatInt(c.NodeTimeout.Milliseconds(), 10),
		"--cluster-require-full-coverage", "no", "--repl-diskless-sync-delay", "0")
	if err := n.cmd.Start(); err != nil {
		c.t.Fatalf("testserver: %s on %s: %v", c.bin, n.Addr, err)
	}
	if err := waitPort(n.Addr, 10*time.Second); err != nil {
		c.t.Fatalf("testserver: %s on %s did not start: %v", c.bin, n.Addr, err)
	}
}

// Kill kills n with SIGKILL, as a crash would, and waits for it to exit.
func (c *RedisCluster) Kill(n *ClusterNode) {
	c.t.Helper()
	start := time.Now()
	c.kill(n)
	c.t.Logf("testserver: killed the cluster node %s (SIGKILL) in %v", n.Addr, since(start))
}

func (c *RedisCluster) kill(n *ClusterNode) {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
	n.cmd = nil
}

// WaitOK waits until every running node reports cluster_state:ok and sees
// every node and every slot served, and every replica's link to its master
// is up (a replica that never synchronised cannot take over).
func (c *RedisCluster) WaitOK(within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		bad := ""
		for _, n := range c.Nodes {
			if n.cmd == nil {
				continue
			}
			info, err := Command(n.Addr, "CLUSTER", "INFO")
			if err != nil || !strings.Contains(info, "cluster_state:ok") ||
				!strings.Contains(info, "cluster_known_nodes:6\r") || !strings.Contains(info, "cluster_slots_ok:16384\r") {
				bad = fmt.Sprintf("%s: %v\n%s", n.Addr, err, info)
				break
			}
			repl, err := Command(n.Addr, "INFO", "replication")
			if err != nil || strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
				bad = fmt.Sprintf("%s: %v\n%s", n.Addr, err, repl)
				break
			}
		}
		if bad == "" {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("testserver: the Redis Cluster is not ok after %v: %s", within, bad)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Command sends one command to the Redis server at addr and returns its
// reply. A simple string, a bulk string or an integer comes back as text,
// and an error reply as an error. It serves tests that must not depend on
// a client library.
func Command(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("testserver: empty reply from %s", addr)
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("testserver: %s: %s", addr, line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("testserver: unexpected reply %q from %s", line, addr)
}

// Shard returns the master that serves key's hash slot, in its own view,
// and a replica of it whose link to it is up. It waits up to within for
// the cluster to settle. After a failover, the nodes learn the new layout
// over a few hundred milliseconds.
func (c *RedisCluster) Shard(key string, within time.Duration) (master, replica *ClusterNode) {
	c.t.Helper()
	slot := Slot(key)
	deadline := time.Now().Add(within)
	for {
		if master, replica = c.shard(slot); replica != nil {
			return master, replica
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("testserver: no master of slot %d with a replica in sync within %v", slot, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *RedisCluster) shard(slot int) (master, replica *ClusterNode) {
	for _, n := range c.Nodes {
		if n.cmd == nil {
			continue
		}
		out, err := Command(n.Addr, "CLUSTER", "NODES")
		if err != nil {
			continue
		}
		var id string
		lines := strings.Split(out, "\n")
		for _, line := range lines {
			f := strings.Fields(line)
			if len(f) < 8 || f[2] != "myself,master" {
				continue
			}
			for _, r := range f[8:] {
				lo, hi, ok := strings.Cut(r, "-")
				if !ok {
					hi = lo
				}
				a, err1 := strconv.Atoi(lo)
				b, err2 := strconv.Atoi(hi)
				if err1 == nil && err2 == nil && a <= slot && slot <= b {
					id = f[0]
				}
			}
		}
		if id == "" {
			continue
		}
		for _, line := range lines {
			f := strings.Fields(line)
			if len(f) < 8 || f[2] != "slave" || f[3] != id {
				continue
			}
			addr, _, _ := strings.Cut(f[1], "@")
			r := c.Node(addr)
			if r == nil || r.cmd == nil {
				continue
			}
			info, err := Command(addr, "INFO", "replication")
			_, port, _ := net.SplitHostPort(n.Addr)
			if err == nil && strings.Contains(info, "master_link_status:up") && strings.Contains(info, "master_port:"+port+"\r") {
				return n, r
			}
		}
	}
	return nil, nil
}

// Slot returns the Redis Cluster hash slot of key. It is the CRC16
// (XMODEM), modulo 16384, of the key's hash tag, or of the whole key when
// it has no hash tag. The hash tag is the text between the first '{' and
// the next '}', when not empty.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}
