package config

import (
	"strings"
	"testing"
	"time"
)

// TestSignInThrottleKeys: the signin_throttle_* keys in pgbouncer.ini and
// their signin_throttle: block in pooler.yaml give the same Config and
// SHOW CONFIG values; they are off by default.
func TestSignInThrottleKeys(t *testing.T) {
	dir := t.TempDir()
	ini := writeFile(t, dir, "t.ini", `[pgbouncer]
listen_addr = 127.0.0.1
auth_type = trust
signin_throttle_address_burst = 10
signin_throttle_address_refill = 30
signin_throttle_role_burst = 50
signin_throttle_role_refill = 2.5
signin_throttle_max_delay = 3
`)
	yml := writeFile(t, dir, "t.yaml", `listen: {addresses: [127.0.0.1]}
auth: {type: trust}
signin_throttle:
  address_burst: 10
  address_refill: 30s
  role_burst: 50
  role_refill: 2500ms
  max_delay: 3
`)
	want := SignInThrottle{AddressBurst: 10, AddressRefill: 30 * time.Second, RoleBurst: 50, RoleRefill: 2500 * time.Millisecond, MaxDelay: 3 * time.Second}
	for _, path := range []string{ini, yml} {
		c, err := Load(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if c.SignInThrottle != want || !c.SignInThrottle.Enabled() {
			t.Errorf("%s: %+v", path, c.SignInThrottle)
		}
		for k, v := range map[string]string{"signin_throttle_address_burst": "10", "signin_throttle_address_refill": "30",
			"signin_throttle_role_burst": "50", "signin_throttle_role_refill": "2.5", "signin_throttle_max_delay": "3"} {
			if got := settingValue(c, k); got != v {
				t.Errorf("%s: SHOW CONFIG %s = %q, want %q", path, k, got, v)
			}
		}
	}
	d := newConfig("", "")
	if d.SignInThrottle != (SignInThrottle{AddressRefill: time.Minute, RoleRefill: time.Minute}) || d.SignInThrottle.Enabled() {
		t.Errorf("defaults %+v", d.SignInThrottle)
	}
}

// TestSignInThrottleValidation: negative values, and a scope turned on
// with no refill, are refused; a hold as long as client_login_timeout is
// warned about.
func TestSignInThrottleValidation(t *testing.T) {
	for _, tc := range []struct{ lines, want string }{
		{"signin_throttle_address_burst = -1", "signin_throttle_address_burst: must not be negative"},
		{"signin_throttle_role_burst = -2", "signin_throttle_role_burst: must not be negative"},
		{"signin_throttle_role_burst = 3\nsignin_throttle_role_refill = 0", "signin_throttle_role_refill: must be positive when signin_throttle_role_burst is set"},
		{"signin_throttle_address_refill = -1", "signin_throttle_address_refill: invalid value \"-1\""},
		{"signin_throttle_max_delay = -1", "signin_throttle_max_delay: invalid value \"-1\""},
	} {
		path := writeFile(t, t.TempDir(), "t.ini", "[pgbouncer]\nlisten_addr = 127.0.0.1\nauth_type = trust\n"+tc.lines+"\n")
		_, err := Load(path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.lines, err, tc.want)
		}
	}
	// Off with no refill is fine.
	path := writeFile(t, t.TempDir(), "t.ini", "[pgbouncer]\nlisten_addr = 127.0.0.1\nauth_type = trust\nsignin_throttle_role_refill = 0\n")
	if _, err := Load(path); err != nil {
		t.Error(err)
	}
	path = writeFile(t, t.TempDir(), "t.ini", "[pgbouncer]\nlisten_addr = 127.0.0.1\nauth_type = trust\nclient_login_timeout = 10\n"+
		"signin_throttle_address_burst = 5\nsignin_throttle_max_delay = 10\n")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	warned := false
	for _, w := range c.Warnings {
		warned = warned || strings.Contains(w.Error(), "signin_throttle_max_delay: signin_throttle_max_delay (10s) is not below client_login_timeout (10s)")
	}
	if !warned {
		t.Errorf("warnings %v", c.Warnings)
	}
}

// TestSignInThrottleYAMLNegative: pooler.yaml durations may be negative
// Go durations; a negative refill is refused there too (and by Validate,
// for a Config built in code).
func TestSignInThrottleYAMLNegative(t *testing.T) {
	path := writeFile(t, t.TempDir(), "t.yaml", "listen: {addresses: [127.0.0.1]}\nauth: {type: trust}\nsignin_throttle: {role_burst: 2, role_refill: -5s}\n")
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), `invalid duration "-5s": must not be negative`) {
		t.Fatalf("negative refill: %v", err)
	}
	c := newConfig("", "")
	c.ListenAddrs = []string{"127.0.0.1"}
	c.SignInThrottle = SignInThrottle{RoleBurst: 2, RoleRefill: -time.Second}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "signin_throttle_role_refill: must not be negative") {
		t.Fatalf("Validate: %v", err)
	}
}
