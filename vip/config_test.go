package vip

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"pgregory.net/rapid"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want []string // substrings of the error; none: valid
	}{
		{name: "default", edit: func(*Config) {}},
		{name: "zero value", edit: func(c *Config) { *c = Config{} }},
		{name: "forever", edit: func(c *Config) { c.Lifetime = 0; c.RenewEvery = time.Hour }},
		{name: "shortest lifetime", edit: func(c *Config) { c.Lifetime = time.Second; c.RenewEvery = 500 * time.Millisecond }},
		{name: "negative lifetime", edit: func(c *Config) { c.Lifetime = -time.Second },
			want: []string{"vip: config: Lifetime: -1s is negative"}},
		{name: "fractional lifetime", edit: func(c *Config) { c.Lifetime = 2500 * time.Millisecond },
			want: []string{"vip: config: Lifetime: 2.5s is not a whole number of seconds"}},
		{name: "lifetime beyond the kernel", edit: func(c *Config) { c.Lifetime = 1 << 32 * time.Second },
			want: []string{"vip: config: Lifetime:", "too long"}},
		{name: "renewal too rare", edit: func(c *Config) { c.RenewEvery = 2 * time.Second },
			want: []string{"vip: config: RenewEvery: 2s is more than half of Lifetime 3s"}},
		{name: "renewal too rare for default renewal", edit: func(c *Config) { c.Lifetime = time.Second; c.RenewEvery = 0 },
			want: []string{"RenewEvery: 1s is more than half of Lifetime 1s"}},
		{name: "negative renewal", edit: func(c *Config) { c.RenewEvery = -1 },
			want: []string{"vip: config: RenewEvery: -1ns is negative"}},
		{name: "negative burst", edit: func(c *Config) { c.Burst = -1 },
			want: []string{"vip: config: Burst: -1 is out of range 1..100"}},
		{name: "huge burst", edit: func(c *Config) { c.Burst = 1000 },
			want: []string{"vip: config: Burst: 1000 is out of range"}},
		{name: "negative spacing", edit: func(c *Config) { c.Spacing = -time.Millisecond },
			want: []string{"vip: config: Spacing: -1ms is negative"}},
		{name: "negative refresh", edit: func(c *Config) { c.Refresh = -time.Second },
			want: []string{"vip: config: Refresh: -1s is negative"}},
		{name: "every problem at once", edit: func(c *Config) { *c = Config{Lifetime: -1, RenewEvery: -1, Burst: -1, Spacing: -1, Refresh: -1} },
			want: []string{"Lifetime:", "RenewEvery:", "Burst:", "Spacing:", "Refresh:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.edit(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %+v", c)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if _, err := New(c); err == nil {
				t.Errorf("New accepted an invalid config")
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	got := Config{}.withDefaults()
	want := Config{Lifetime: 0, RenewEvery: time.Second, Burst: 5, Spacing: 200 * time.Millisecond, Refresh: 10 * time.Second}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Config{}, "Logger")); diff != "" {
		t.Errorf("zero Config with defaults (-want +got):\n%s", diff)
	}
	if got.Logger == nil {
		t.Error("no logger")
	}
	d := DefaultConfig()
	if d.Lifetime != 3*time.Second {
		t.Errorf("DefaultConfig().Lifetime = %v, want 3s", d.Lifetime)
	}
	if diff := cmp.Diff(d, d.withDefaults(), cmpopts.IgnoreFields(Config{}, "Logger")); diff != "" {
		t.Errorf("DefaultConfig leaves fields to defaults (-want +got):\n%s", diff)
	}
}

func TestVIPValidate(t *testing.T) {
	tests := []struct {
		vip  VIP
		want string // substring of the error; empty: valid
	}{
		{vip: mustVIP("192.0.2.100/24", "eth0")},
		{vip: mustVIP("192.0.2.100/32", "bond0.100")},
		{vip: mustVIP("2001:db8::100/64", "eth0")},
		{vip: mustVIP("fe80::100/64", "eth0")},
		{vip: VIP{Interface: "eth0"}, want: "vip: Prefix: not a valid address"},
		{vip: mustVIP("127.0.0.1/8", "lo"), want: "vip: Prefix: 127.0.0.1 is a loopback address"},
		{vip: mustVIP("127.255.0.1/32", "eth0"), want: "is a loopback address"},
		{vip: mustVIP("::1/128", "lo"), want: "vip: Prefix: ::1 is a loopback address"},
		{vip: mustVIP("::ffff:192.0.2.1/120", "eth0"), want: "IPv4-mapped"},
		{vip: mustVIP("0.0.0.0/0", "eth0"), want: "not a unicast address"},
		{vip: mustVIP("::/0", "eth0"), want: "not a unicast address"},
		{vip: mustVIP("224.0.0.81/32", "eth0"), want: "not a unicast address"},
		{vip: mustVIP("ff02::1/128", "eth0"), want: "not a unicast address"},
		{vip: mustVIP("255.255.255.255/32", "eth0"), want: "not a unicast address"},
		{vip: mustVIP("192.0.2.100/24", ""), want: "vip: Interface: is required"},
		{vip: mustVIP("192.0.2.100/24", "averyveryverylongname"), want: "longer than 15 bytes"},
		{vip: mustVIP("192.0.2.100/24", "eth0:1"), want: "not a valid interface name"},
		{vip: mustVIP("192.0.2.100/24", "a/b"), want: "not a valid interface name"},
		{vip: mustVIP("192.0.2.100/24", "a b"), want: "not a valid interface name"},
	}
	for _, tt := range tests {
		t.Run(tt.vip.String(), func(t *testing.T) {
			err := tt.vip.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tt.want != "" && err == nil:
				t.Errorf("Validate accepted it, want %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

// Validate never panics and accepts exactly the non-loopback,
// non-multicast, non-unspecified unicast prefixes on a plausible name.
func TestVIPValidateProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		raw := rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "addr")
		is4 := rapid.Bool().Draw(t, "is4")
		var a netip.Addr
		if is4 {
			a = netip.AddrFrom4([4]byte(raw[:4]))
		} else {
			a = netip.AddrFrom16([16]byte(raw))
		}
		bits := rapid.IntRange(-1, a.BitLen()+1).Draw(t, "bits")
		ifname := rapid.StringN(0, 20, -1).Draw(t, "ifname")
		p := netip.PrefixFrom(a, bits)
		err := VIP{Prefix: p, Interface: ifname}.Validate()
		ok := p.IsValid() && !a.Is4In6() && !a.IsLoopback() && !a.IsUnspecified() && !a.IsMulticast() &&
			a != netip.AddrFrom4([4]byte{255, 255, 255, 255}) &&
			ifname != "" && len(ifname) <= 15 && !strings.ContainsAny(ifname, "/: \t\n\x00\x7f")
		if ok {
			for _, r := range ifname {
				if r < ' ' {
					ok = false
				}
			}
		}
		if ok != (err == nil) {
			t.Fatalf("Validate(%v dev %q) = %v, want ok=%v", p, ifname, err, ok)
		}
	})
}
