package kernel

import (
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The exact attribute bytes the kernel's ip_vs_genl_parse_daemon reads.
// Layout: nested IPVS_CMD_ATTR_DAEMON (type 3 with NLA_F_NESTED, 0x8003),
// then each attribute as len(2, host order) type(2) value, padded to 4
// bytes. The kernel masks NLA_F_NESTED when it parses.
func TestStartMessageBytes(t *testing.T) {
	tests := []struct {
		name string
		d    Daemon
		want string // hex of the attribute payload
	}{
		{
			name: "master with defaults",
			d:    Daemon{Role: Master, Interface: "sync0", SyncID: 1},
			want: "2000" + "0380" + // nest, 32 bytes, type 3 | NLA_F_NESTED
				"0800" + "0100" + "01000000" + // state = master
				"0a00" + "0200" + "73796e633000" + "0000" + // "sync0\0" + pad
				"0800" + "0300" + "01000000", // syncid 1
		},
		{
			name: "backup with every option, IPv4 group",
			d: Daemon{Role: Backup, Interface: "eth0", SyncID: 7, MaxLen: 1472, Port: 8848, TTL: 2,
				Group: netip.MustParseAddr("224.0.0.81")},
			want: "4000" + "0380" +
				"0800" + "0100" + "02000000" +
				"0900" + "0200" + "6574683000" + "000000" +
				"0800" + "0300" + "07000000" +
				"0600" + "0400" + "c005" + "0000" + // maxlen 1472, host order
				"0600" + "0700" + "9022" + "0000" + // port 8848, host order
				"0500" + "0800" + "02" + "000000" + // ttl 2
				"0800" + "0500" + "e0000051", // group, network order
		},
		{
			name: "IPv6 group",
			d:    Daemon{Role: Master, Interface: "s", Group: netip.MustParseAddr("ff02::1:8848")},
			want: "3000" + "0380" +
				"0800" + "0100" + "01000000" +
				"0600" + "0200" + "7300" + "0000" +
				"0800" + "0300" + "00000000" +
				"1400" + "0600" + "ff020000000000000000000000018848",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := startMessage(tt.d)
			if err != nil {
				t.Fatal(err)
			}
			if m.Header.Command != cmdNewDaemon || m.Header.Version != 1 {
				t.Fatalf("header %+v", m.Header)
			}
			if got := hex.EncodeToString(m.Data); got != tt.want {
				t.Fatalf("attributes\n got %s\nwant %s", got, tt.want)
			}
			back, err := parseDaemon(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.d, back, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Fatalf("parse(encode) (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStopMessage(t *testing.T) {
	m, err := stopMessage(Backup)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Command != cmdDelDaemon || hex.EncodeToString(m.Data) != "0c000380"+"0800"+"0100"+"02000000" {
		t.Fatalf("stop message %+v %x", m.Header, m.Data)
	}
	if _, err := stopMessage(3); err == nil {
		t.Fatal("stop of role 3 accepted")
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		d    Daemon
		want string
	}{
		{Daemon{Role: 0, Interface: "eth0"}, "neither master nor backup"},
		{Daemon{Role: Master}, "interface"},
		{Daemon{Role: Master, Interface: "a-very-long-ifname"}, "interface"},
		{Daemon{Role: Master, Interface: "eth0", SyncID: 256}, "syncid 256"},
		{Daemon{Role: Master, Interface: "eth0", Group: netip.MustParseAddr("192.0.2.1")}, "not a multicast"},
	} {
		if _, err := startMessage(tt.d); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want an error containing %q", tt.d, err, tt.want)
		}
	}
}

func TestParseDaemonErrors(t *testing.T) {
	for name, h := range map[string]string{
		"empty":            "",
		"truncated":        "2400030008",
		"no daemon attr":   "0800010001000000",
		"bad group length": "0c000300" + "0700" + "0500" + "e00000" + "00",
	} {
		b, _ := hex.DecodeString(h)
		if _, err := parseDaemon(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseDaemon(f *testing.F) {
	for _, d := range []Daemon{
		{Role: Master, Interface: "sync0", SyncID: 1},
		{Role: Backup, Interface: "eth0", MaxLen: 1472, Port: 8848, TTL: 2, Group: netip.MustParseAddr("ff02::1:8848")},
	} {
		m, _ := startMessage(d)
		f.Add(m.Data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseDaemon(b)
		if err != nil || d.Validate() != nil {
			return
		}
		m, err := startMessage(d)
		if err != nil {
			t.Fatalf("a valid parsed daemon does not encode: %v", err)
		}
		back, err := parseDaemon(m.Data)
		if err != nil || back != d {
			t.Fatalf("round trip: %+v -> %+v, %v", d, back, err)
		}
	})
}

// On a kernel without IPVS (this project's CI machines), Dial says so
// clearly instead of failing later.
func TestDialWithoutIPVS(t *testing.T) {
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
		t.Skip("this kernel has IPVS; the real-kernel tier covers it")
	}
	s, err := DialSyncDaemons()
	if err == nil {
		s.Close()
		t.Fatal("DialSyncDaemons succeeded on a kernel without IPVS")
	}
	if !errors.Is(err, ErrNoIPVS) {
		t.Fatalf("error %v, want ErrNoIPVS", err)
	}
}
