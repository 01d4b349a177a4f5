package config

import (
	"strings"
	"testing"
	"time"
)

// TestPeers: peer_id and [peers] in pgbouncer.ini, and the same in
// pooler.yaml, give the same Config; shutdown_timeout and
// shutdown_accept_grace come along.
func TestPeers(t *testing.T) {
	dir := t.TempDir()
	ini := writeFile(t, dir, "p.ini", `[pgbouncer]
listen_addr = 127.0.0.1
auth_type = trust
so_reuseport = 1
peer_id = 2
shutdown_timeout = 7.5
shutdown_accept_grace = 2
[peers]
1 = host=/run/pgwarden-1
2 = host=/run/pgwarden-2 port=7432
3 = host=pgwarden-2.pgwarden-peers.default.svc pool_size=4
1 = host=/run/pgwarden-one
`)
	yml := writeFile(t, dir, "p.yaml", `listen: {addresses: [127.0.0.1], so_reuseport: true}
auth: {type: trust}
timeouts: {shutdown: 7.5s, shutdown_accept_grace: 2}
peer_id: 2
peers:
  3: {host: pgwarden-2.pgwarden-peers.default.svc, pool_size: 4}
  1: {host: /run/pgwarden-one}
  2: {host: /run/pgwarden-2, port: 7432}
`)
	want := []Peer{
		{ID: 1, Host: "/run/pgwarden-one", Port: 6432},
		{ID: 2, Host: "/run/pgwarden-2", Port: 7432},
		{ID: 3, Host: "pgwarden-2.pgwarden-peers.default.svc", Port: 6432, PoolSize: 4},
	}
	for _, path := range []string{ini, yml} {
		c, err := Load(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if c.PeerID != 2 || !c.SOReuseport || c.ShutdownTimeout != 7500*time.Millisecond || c.ShutdownAcceptGrace != 2*time.Second {
			t.Errorf("%s: peer_id %d, so_reuseport %v, shutdown_timeout %v, shutdown_accept_grace %v", path, c.PeerID, c.SOReuseport, c.ShutdownTimeout, c.ShutdownAcceptGrace)
		}
		if len(c.Peers) != len(want) {
			t.Fatalf("%s: peers %+v", path, c.Peers)
		}
		// The ini lists peers in file order (a repeated id replaces the
		// earlier entry); compare by id.
		for _, w := range want {
			p := c.PeerByID(w.ID)
			if p == nil || p.Host != w.Host || p.Port != w.Port || p.PoolSize != w.PoolSize || p.Line == 0 {
				t.Errorf("%s: peer %d = %+v, want %+v", path, w.ID, p, w)
			}
		}
		if got := settingValue(c, "peer_id"); got != "2" {
			t.Errorf("%s: SHOW CONFIG peer_id = %q", path, got)
		}
		if got := settingValue(c, "shutdown_timeout"); got != "7.5" {
			t.Errorf("%s: SHOW CONFIG shutdown_timeout = %q", path, got)
		}
		for _, w := range c.Warnings {
			if strings.Contains(w.Error(), "peer") {
				t.Errorf("%s: warning %v", path, w)
			}
		}
	}
}

func TestPeerProblems(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ name, file, want string }{
		{"id.ini", "[pgbouncer]\nlisten_addr = *\npeer_id = 16384\n", "peer_id: must be from 0 (peering off) to 16383"},
		{"relative.ini", "[pgbouncer]\nlisten_addr = *\npeer_id = 1\n[peers]\n2 = host=run/x\n", "peers/2: host \"run/x\": a Unix socket directory must be an absolute path"},
		{"nohost.yaml", "listen: {addresses: ['*']}\npeer_id: 1\npeers:\n  2: {port: 7000}\n", "peers.2: host was not provided for peer 2"},
		{"badid.yaml", "listen: {addresses: ['*']}\npeer_id: 1\npeers:\n  0: {host: x}\n", "peers.0: ids of peers must be a number"},
		{"word.yaml", "listen: {addresses: ['*']}\npeer_id: three\n", "invalid peer_id \"three\""},
		{"negative.yaml", "listen: {addresses: ['*']}\ntimeouts: {shutdown: -1s}\n", "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(writeFile(t, dir, tt.name, tt.file))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestPeerIDFromHostname(t *testing.T) {
	for host, want := range map[string]int{"pgwarden-0": 1, "pgwarden-12.pgwarden-peers": 13, "db-pool-3": 4, "pgwarden": 0, "pgwarden-x": 0, "pgwarden-16383": 0} {
		got, ok := PeerIDFromHostname(host)
		if got != want || ok != (want != 0) {
			t.Errorf("PeerIDFromHostname(%q) = %d, %v; want %d", host, got, ok, want)
		}
	}
}
