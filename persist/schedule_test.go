package persist

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lbha/lbha/dest"
)

// entryView is the part of an Entry the tests compare, in printable form.
type entryView struct {
	Proto    uint8
	Client   string
	Virtual  string
	DestAddr string
	Flags    Flags
	State    string
	Fwmark   uint32
	Timeout  time.Duration
	NControl int
	PEData   string
}

func project(e Entry) entryView {
	return entryView{
		Proto:    e.Proto,
		Client:   e.Client.String(),
		Virtual:  e.Virtual.String(),
		DestAddr: e.DestAddr.String(),
		Flags:    e.Flags,
		State:    e.StateName(),
		Fwmark:   e.Fwmark,
		Timeout:  e.Timeout,
		NControl: e.NControl,
		PEData:   string(e.PEData),
	}
}

func TestScheduleTemplateKeys(t *testing.T) {
	const p300 = 300 * time.Second
	tests := []struct {
		name     string
		svc      Service
		pkt      Packet
		dest     *dest.Dest
		wantTmpl entryView
		wantConn entryView
		wantPort uint16
	}{
		{
			name: "tcp NAT /24",
			svc:  Service{Addr: ip("192.0.2.100"), Port: 80, Timeout: p300, Netmask: ip("255.255.255.0")},
			pkt:  Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:51234"), Dst: ap("192.0.2.100:80"), State: TCPEstablished},
			dest: newDest("198.51.100.11", 80, dest.Masq, 1),
			wantTmpl: entryView{Proto: 6, Client: "192.0.2.0:0", Virtual: "192.0.2.100:80", DestAddr: "198.51.100.11:80",
				Flags: 0x1100, State: "ASSURED", Timeout: p300, NControl: 1},
			wantConn: entryView{Proto: 6, Client: "192.0.2.10:51234", Virtual: "192.0.2.100:80", DestAddr: "198.51.100.11:80",
				Flags: 0x0000, State: "ESTABLISHED", Timeout: 900 * time.Second},
			wantPort: 80,
		},
		{
			// Captured DR flags: template 0x1183, established conn 0x83.
			name: "tcp DR default netmask",
			svc:  Service{Addr: ip("192.0.2.100"), Port: 80, Timeout: p300},
			pkt:  Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:57780"), Dst: ap("192.0.2.100:80"), State: TCPEstablished},
			dest: newDest("198.51.100.12", 80, dest.Route, 1),
			wantTmpl: entryView{Proto: 6, Client: "192.0.2.10:0", Virtual: "192.0.2.100:80", DestAddr: "198.51.100.12:80",
				Flags: 0x1183, State: "ASSURED", Timeout: p300, NControl: 1},
			wantConn: entryView{Proto: 6, Client: "192.0.2.10:57780", Virtual: "192.0.2.100:80", DestAddr: "198.51.100.12:80",
				Flags: 0x0083, State: "ESTABLISHED", Timeout: 900 * time.Second},
			wantPort: 80,
		},
		{
			name: "tunnel, handshake not finished",
			svc:  Service{Addr: ip("192.0.2.100"), Port: 443, Timeout: p300},
			pkt:  Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:4000"), Dst: ap("192.0.2.100:443"), State: TCPSynRecv},
			dest: newDest("198.51.100.13", 8443, dest.Tunnel, 1),
			wantTmpl: entryView{Proto: 6, Client: "192.0.2.10:0", Virtual: "192.0.2.100:443", DestAddr: "198.51.100.13:8443",
				Flags: 0x1182, State: "NONE", Timeout: p300, NControl: 1},
			wantConn: entryView{Proto: 6, Client: "192.0.2.10:4000", Virtual: "192.0.2.100:443", DestAddr: "198.51.100.13:8443",
				Flags: 0x0082, State: "SYN_RECV", Timeout: 60 * time.Second},
			wantPort: 8443,
		},
		{
			name: "ftp control",
			svc:  Service{Addr: ip("192.0.2.100"), Port: 21, Timeout: p300},
			pkt:  Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:4000"), Dst: ap("192.0.2.100:21"), State: TCPSynRecv},
			dest: newDest("198.51.100.11", 21, dest.Masq, 1),
			wantTmpl: entryView{Proto: 6, Client: "192.0.2.10:0", Virtual: "192.0.2.100:0", DestAddr: "198.51.100.11:0",
				Flags: 0x1100, State: "NONE", Timeout: p300, NControl: 1},
			wantConn: entryView{Proto: 6, Client: "192.0.2.10:4000", Virtual: "192.0.2.100:21", DestAddr: "198.51.100.11:21",
				Flags: 0x0000, State: "SYN_RECV", Timeout: 60 * time.Second},
			wantPort: 21,
		},
		{
			name: "ftp passive data through the ftp service",
			svc:  Service{Addr: ip("192.0.2.100"), Port: 21, Timeout: p300},
			pkt:  Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:4001"), Dst: ap("192.0.2.100:30000"), State: TCPSynRecv},
			dest: newDest("198.51.100.11", 21, dest.Masq, 1),
			wantTmpl: entryView{Proto: 6, Client: "192.0.2.10:0", Virtual: "192.0.2.100:0", DestAddr: "198.51.100.11:0",
				Flags: 0x1100, State: "NONE", Timeout: p300, NControl: 1},
			wantConn: entryView{Proto: 6, Client: "192.0.2.10:4001", Virtual: "192.0.2.100:30000", DestAddr: "198.51.100.11:30000",
				Flags: 0x0000, State: "SYN_RECV", Timeout: 60 * time.Second},
			wantPort: 30000,
		},
		{
			name: "port zero service keeps the packet port",
			svc:  Service{Addr: ip("192.0.2.100"), Port: 0, Timeout: p300},
			pkt:  Packet{Proto: ProtoUDP, Src: ap("192.0.2.10:4000"), Dst: ap("192.0.2.100:53"), State: UDPNormal},
			dest: newDest("198.51.100.11", 5353, dest.Masq, 1),
			wantTmpl: entryView{Proto: 17, Client: "192.0.2.10:0", Virtual: "192.0.2.100:0", DestAddr: "198.51.100.11:0",
				Flags: 0x1100, State: "NONE", Timeout: p300, NControl: 1},
			wantConn: entryView{Proto: 17, Client: "192.0.2.10:4000", Virtual: "192.0.2.100:53", DestAddr: "198.51.100.11:53",
				Flags: 0x0100, State: "UDP", Timeout: 300 * time.Second},
			wantPort: 53,
		},
		{
			name: "fwmark IPv4",
			svc:  Service{Fwmark: 7, Timeout: 600 * time.Second, Netmask: ip("255.255.255.0")},
			pkt:  Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:4000"), Dst: ap("192.0.2.101:80"), Fwmark: 7, State: TCPEstablished},
			dest: newDest("198.51.100.11", 80, dest.Masq, 1),
			wantTmpl: entryView{Proto: 0, Client: "192.0.2.0:0", Virtual: "0.0.0.7:0", DestAddr: "198.51.100.11:0",
				Flags: 0x1100, State: "ASSURED", Fwmark: 7, Timeout: 600 * time.Second, NControl: 1},
			wantConn: entryView{Proto: 6, Client: "192.0.2.10:4000", Virtual: "192.0.2.101:80", DestAddr: "198.51.100.11:80",
				Flags: 0x0000, State: "ESTABLISHED", Fwmark: 7, Timeout: 900 * time.Second},
			wantPort: 80,
		},
		{
			name: "fwmark IPv6 /64",
			svc:  Service{Fwmark: 0x01020304, Timeout: p300, PrefixLen: 64},
			pkt:  Packet{Proto: ProtoTCP, Src: ap("[2001:db8:1:2::10]:4000"), Dst: ap("[2001:db8:f::101]:443"), Fwmark: 0x01020304, State: TCPSynRecv},
			dest: newDest("2001:db8:b::11", 443, dest.Route, 1),
			wantTmpl: entryView{Proto: 0, Client: "[2001:db8:1:2::]:0", Virtual: "[102:304::]:0", DestAddr: "[2001:db8:b::11]:0",
				Flags: 0x1183, State: "NONE", Fwmark: 0x01020304, Timeout: p300, NControl: 1},
			wantConn: entryView{Proto: 6, Client: "[2001:db8:1:2::10]:4000", Virtual: "[2001:db8:f::101]:443", DestAddr: "[2001:db8:b::11]:443",
				Flags: 0x0083, State: "SYN_RECV", Fwmark: 0x01020304, Timeout: 60 * time.Second},
			wantPort: 443,
		},
		{
			name: "IPv6 service /64",
			svc:  Service{Addr: ip("2001:db8:f::100"), Port: 80, Timeout: p300, PrefixLen: 64},
			pkt:  Packet{Proto: ProtoTCP, Src: ap("[2001:db8:1:2:3:4:5:6]:4000"), Dst: ap("[2001:db8:f::100]:80"), State: TCPEstablished},
			dest: newDest("2001:db8:b::12", 80, dest.Masq, 1),
			wantTmpl: entryView{Proto: 6, Client: "[2001:db8:1:2::]:0", Virtual: "[2001:db8:f::100]:80", DestAddr: "[2001:db8:b::12]:80",
				Flags: 0x1100, State: "ASSURED", Timeout: p300, NControl: 1},
			wantConn: entryView{Proto: 6, Client: "[2001:db8:1:2:3:4:5:6]:4000", Virtual: "[2001:db8:f::100]:80", DestAddr: "[2001:db8:b::12]:80",
				Flags: 0x0000, State: "ESTABLISHED", Timeout: 900 * time.Second},
			wantPort: 80,
		},
		{
			name: "sip persistence engine, mask 0.0.0.0",
			svc:  Service{Addr: ip("192.0.2.100"), Port: 5060, Timeout: 60 * time.Second, Netmask: ip("0.0.0.0"), PE: true},
			pkt: Packet{Proto: ProtoUDP, Src: ap("192.0.2.10:40004"), Dst: ap("192.0.2.100:5060"),
				PEData: []byte("a84b4c76e66710@pc33.example.com")},
			dest: newDest("198.51.100.12", 5060, dest.Masq, 1),
			wantTmpl: entryView{Proto: 17, Client: "0.0.0.0:0", Virtual: "192.0.2.100:5060", DestAddr: "198.51.100.12:5060",
				Flags: 0x1100, State: "NONE", Timeout: 60 * time.Second, NControl: 1, PEData: "a84b4c76e66710@pc33.example.com"},
			wantConn: entryView{Proto: 17, Client: "192.0.2.10:40004", Virtual: "192.0.2.100:5060", DestAddr: "198.51.100.12:5060",
				Flags: 0x0100, State: "UDP", Timeout: 300 * time.Second},
			wantPort: 5060,
		},
		{
			name: "non-contiguous netmask",
			svc:  Service{Addr: ip("192.0.2.100"), Port: 80, Timeout: p300, Netmask: ip("255.255.0.255")},
			pkt:  Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:4000"), Dst: ap("192.0.2.100:80"), State: TCPSynRecv},
			dest: newDest("198.51.100.11", 80, dest.Masq, 1),
			wantTmpl: entryView{Proto: 6, Client: "192.0.0.10:0", Virtual: "192.0.2.100:80", DestAddr: "198.51.100.11:80",
				Flags: 0x1100, State: "NONE", Timeout: p300, NControl: 1},
			wantConn: entryView{Proto: 6, Client: "192.0.2.10:4000", Virtual: "192.0.2.100:80", DestAddr: "198.51.100.11:80",
				Flags: 0x0000, State: "SYN_RECV", Timeout: 60 * time.Second},
			wantPort: 80,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl, _ := newTestTable(t, nil)
			s, err := tbl.Schedule(&tt.svc, &tt.pkt, fixed(tt.dest))
			if err != nil {
				t.Fatalf("Schedule: %v", err)
			}
			if s.Dest != tt.dest || s.DestPort != tt.wantPort {
				t.Errorf("Scheduled dest %v port %d, want %v port %d", s.Dest, s.DestPort, tt.dest, tt.wantPort)
			}
			tmpl, conn := mustGet(t, tbl, s.Template), mustGet(t, tbl, s.Conn)
			if diff := cmp.Diff(tt.wantTmpl, project(tmpl)); diff != "" {
				t.Errorf("template (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantConn, project(conn)); diff != "" {
				t.Errorf("connection (-want +got):\n%s", diff)
			}
			if conn.Control != s.Template {
				t.Errorf("connection Control = %#x, want the template %#x", uint64(conn.Control), uint64(s.Template))
			}
			if s.Flags != conn.Flags {
				t.Errorf("Scheduled.Flags = %v, stored %v", s.Flags, conn.Flags)
			}
			// The template is found again under its own key.
			k := Key{Proto: tmpl.Proto, Client: tmpl.Client, Virtual: tmpl.Virtual, Template: true, PEData: tmpl.PEData}
			if r, d, ok := tbl.Lookup(&k); !ok || r != s.Template || d != tt.dest {
				t.Errorf("Lookup(template key) = %#x, %v, %v; want %#x", uint64(r), d, ok, uint64(s.Template))
			}
			ck := Key{Proto: conn.Proto, Client: conn.Client, Virtual: conn.Virtual}
			if r, _, ok := tbl.Lookup(&ck); !ok || r != s.Conn {
				t.Errorf("Lookup(conn key) = %#x, %v; want %#x", uint64(r), ok, uint64(s.Conn))
			}
		})
	}
}

func TestScheduleSharesTemplate(t *testing.T) {
	tests := []struct {
		name   string
		svc    Service
		a, b   Packet
		shared bool
	}{
		{
			name:   "same /24",
			svc:    Service{Port: 80, Timeout: time.Minute, Netmask: ip("255.255.255.0")},
			a:      Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:80")},
			b:      Packet{Proto: ProtoTCP, Src: ap("192.0.2.200:1001"), Dst: ap("192.0.2.100:80")},
			shared: true,
		},
		{
			name: "other /24",
			svc:  Service{Port: 80, Timeout: time.Minute, Netmask: ip("255.255.255.0")},
			a:    Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:80")},
			b:    Packet{Proto: ProtoTCP, Src: ap("192.0.3.10:1000"), Dst: ap("192.0.2.100:80")},
		},
		{
			name: "default /32",
			svc:  Service{Port: 80, Timeout: time.Minute},
			a:    Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:80")},
			b:    Packet{Proto: ProtoTCP, Src: ap("192.0.2.11:1000"), Dst: ap("192.0.2.100:80")},
		},
		{
			name:   "mask 0.0.0.0",
			svc:    Service{Port: 80, Timeout: time.Minute, Netmask: ip("0.0.0.0")},
			a:      Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:80")},
			b:      Packet{Proto: ProtoTCP, Src: ap("203.0.113.7:1000"), Dst: ap("192.0.2.100:80")},
			shared: true,
		},
		{
			name:   "IPv6 same /48",
			svc:    Service{Port: 80, Timeout: time.Minute, PrefixLen: 48},
			a:      Packet{Proto: ProtoTCP, Src: ap("[2001:db8:1:1::1]:1000"), Dst: ap("[2001:db8:f::100]:80")},
			b:      Packet{Proto: ProtoTCP, Src: ap("[2001:db8:1:ffff::2]:1000"), Dst: ap("[2001:db8:f::100]:80")},
			shared: true,
		},
		{
			name: "IPv6 other /48",
			svc:  Service{Port: 80, Timeout: time.Minute, PrefixLen: 48},
			a:    Packet{Proto: ProtoTCP, Src: ap("[2001:db8:1:1::1]:1000"), Dst: ap("[2001:db8:f::100]:80")},
			b:    Packet{Proto: ProtoTCP, Src: ap("[2001:db8:2:1::1]:1000"), Dst: ap("[2001:db8:f::100]:80")},
		},
		{
			name:   "fwmark: any port and VIP",
			svc:    Service{Fwmark: 9, Timeout: time.Minute},
			a:      Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:80"), Fwmark: 9},
			b:      Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:1001"), Dst: ap("192.0.2.101:443"), Fwmark: 9},
			shared: true,
		},
		{
			name: "port service: protocols differ",
			svc:  Service{Port: 53, Timeout: time.Minute},
			a:    Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:53")},
			b:    Packet{Proto: ProtoUDP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:53")},
		},
		{
			name:   "sip: same Call-ID from two clients",
			svc:    Service{Port: 5060, Timeout: time.Minute, Netmask: ip("0.0.0.0"), PE: true},
			a:      Packet{Proto: ProtoUDP, Src: ap("192.0.2.10:5060"), Dst: ap("192.0.2.100:5060"), PEData: []byte("call-1")},
			b:      Packet{Proto: ProtoUDP, Src: ap("192.0.2.11:5060"), Dst: ap("192.0.2.100:5060"), PEData: []byte("call-1")},
			shared: true,
		},
		{
			name: "sip: Call-IDs differ",
			svc:  Service{Port: 5060, Timeout: time.Minute, Netmask: ip("0.0.0.0"), PE: true},
			a:    Packet{Proto: ProtoUDP, Src: ap("192.0.2.10:5060"), Dst: ap("192.0.2.100:5060"), PEData: []byte("call-1")},
			b:    Packet{Proto: ProtoUDP, Src: ap("192.0.2.10:5061"), Dst: ap("192.0.2.100:5060"), PEData: []byte("call-2")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl, _ := newTestTable(t, nil)
			d1 := newDest("198.51.100.11", 80, dest.Masq, 1)
			d2 := newDest("198.51.100.12", 80, dest.Masq, 1)
			sa, err := tbl.Schedule(&tt.svc, &tt.a, fixed(d1))
			if err != nil {
				t.Fatal(err)
			}
			sb, err := tbl.Schedule(&tt.svc, &tt.b, fixed(d2))
			if err != nil {
				t.Fatal(err)
			}
			if got := sa.Template == sb.Template; got != tt.shared {
				t.Errorf("same template = %v, want %v", got, tt.shared)
			}
			wantB := d2
			if tt.shared {
				wantB = d1
			}
			if sb.Dest != wantB {
				t.Errorf("second connection went to %v, want %v", sb.Dest, wantB)
			}
		})
	}
}

func TestScheduleNonPersistent(t *testing.T) {
	tests := []struct {
		name     string
		svc      Service
		pkt      Packet
		dest     *dest.Dest
		wantPort uint16
		wantErr  error
	}{
		{
			name:     "dest port",
			svc:      Service{Port: 80},
			pkt:      Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:80"), State: TCPSynRecv},
			dest:     newDest("198.51.100.11", 8080, dest.Masq, 1),
			wantPort: 8080,
		},
		{
			name:     "fwmark dest without port keeps the packet port",
			svc:      Service{Fwmark: 3},
			pkt:      Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:443"), State: TCPSynRecv},
			dest:     newDest("198.51.100.11", 0, dest.Route, 1),
			wantPort: 443,
		},
		{
			name:    "port zero needs persistence",
			svc:     Service{Port: 0},
			pkt:     Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:443"), State: TCPSynRecv},
			dest:    newDest("198.51.100.11", 0, dest.Route, 1),
			wantErr: ErrInvalid,
		},
		{
			name:    "no destination",
			svc:     Service{Port: 80},
			pkt:     Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:80"), State: TCPSynRecv},
			wantErr: ErrNoDest,
		},
		{
			name:    "unknown protocol",
			svc:     Service{Port: 80},
			pkt:     Packet{Proto: 47, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:80")},
			dest:    newDest("198.51.100.11", 80, dest.Masq, 1),
			wantErr: ErrInvalid,
		},
		{
			name:    "state out of range",
			svc:     Service{Port: 80},
			pkt:     Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:80"), State: 11},
			dest:    newDest("198.51.100.11", 80, dest.Masq, 1),
			wantErr: ErrInvalid,
		},
		{
			name:    "address families differ",
			svc:     Service{Port: 80},
			pkt:     Packet{Proto: ProtoTCP, Src: ap("[2001:db8::1]:1000"), Dst: ap("192.0.2.100:80")},
			dest:    newDest("198.51.100.11", 80, dest.Masq, 1),
			wantErr: ErrInvalid,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl, _ := newTestTable(t, nil)
			s, err := tbl.Schedule(&tt.svc, &tt.pkt, fixed(tt.dest))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Schedule error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if c, tm := tbl.Len(); c+tm != 0 {
					t.Errorf("failed Schedule left %d conns, %d templates", c, tm)
				}
				return
			}
			if s.Template != 0 {
				t.Errorf("non-persistent service made template %#x", uint64(s.Template))
			}
			e := mustGet(t, tbl, s.Conn)
			if e.DestAddr.Port() != tt.wantPort || s.DestPort != tt.wantPort {
				t.Errorf("dest port %d (scheduled %d), want %d", e.DestAddr.Port(), s.DestPort, tt.wantPort)
			}
			if e.Control != 0 {
				t.Errorf("non-persistent connection has a template")
			}
		})
	}
}

func TestSchedulePersistErrors(t *testing.T) {
	d := newDest("198.51.100.11", 5060, dest.Masq, 1)
	tests := []struct {
		name string
		svc  Service
		pkt  Packet
		want error
	}{
		{"sip without Call-ID", Service{Port: 5060, Timeout: time.Minute, PE: true},
			Packet{Proto: ProtoUDP, Src: ap("192.0.2.10:5060"), Dst: ap("192.0.2.100:5060")}, ErrInvalid},
		{"Call-ID too long", Service{Port: 5060, Timeout: time.Minute, PE: true},
			Packet{Proto: ProtoUDP, Src: ap("192.0.2.10:5060"), Dst: ap("192.0.2.100:5060"), PEData: make([]byte, 256)}, ErrInvalid},
		{"IPv6 prefix 129", Service{Port: 80, Timeout: time.Minute, PrefixLen: 129},
			Packet{Proto: ProtoTCP, Src: ap("[2001:db8::1]:1000"), Dst: ap("[2001:db8::100]:80")}, ErrInvalid},
		{"IPv6 netmask on IPv4", Service{Port: 80, Timeout: time.Minute, Netmask: ip("ffff::")},
			Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:80")}, ErrInvalid},
		{"sub-millisecond timeout", Service{Port: 80, Timeout: time.Microsecond},
			Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:80")}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl, _ := newTestTable(t, nil)
			if _, err := tbl.Schedule(&tt.svc, &tt.pkt, fixed(d)); !errors.Is(err, tt.want) {
				t.Fatalf("Schedule error = %v, want %v", err, tt.want)
			}
			if c, tm := tbl.Len(); c+tm != 0 {
				t.Errorf("failed Schedule left %d conns, %d templates", c, tm)
			}
		})
	}
}

func TestScheduleExistingConnection(t *testing.T) {
	tbl, _ := newTestTable(t, nil)
	d := newDest("198.51.100.11", 80, dest.Masq, 1)
	svc := &Service{Port: 80, Timeout: time.Minute}
	pkt := &Packet{Proto: ProtoTCP, Src: ap("192.0.2.10:1000"), Dst: ap("192.0.2.100:80"), State: TCPSynRecv}
	first, err := tbl.Schedule(svc, pkt, fixed(d))
	if err != nil {
		t.Fatal(err)
	}
	again, err := tbl.Schedule(svc, pkt, fixed(d))
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second Schedule error = %v, want ErrExists", err)
	}
	if again.Conn != first.Conn {
		t.Errorf("ErrExists returned Conn %#x, want %#x", uint64(again.Conn), uint64(first.Conn))
	}
	// The failed attempt must not leave a controlled-connection count.
	if got := mustGet(t, tbl, first.Template).NControl; got != 1 {
		t.Errorf("template NControl = %d, want 1", got)
	}
	if diff := cmp.Diff(counters{Active: 1, Persist: 1}, countersOf(d)); diff != "" {
		t.Errorf("dest counters (-want +got):\n%s", diff)
	}
}

func TestScheduleFull(t *testing.T) {
	tbl, _ := newTestTable(t, func(c *Config) { c.Shards = 1; c.MaxEntries = 3 })
	d := newDest("198.51.100.11", 80, dest.Masq, 1)
	svc := &Service{Port: 80, Timeout: time.Minute}
	for i, want := range []error{nil, nil, ErrFull, ErrFull} {
		// Connections 1 and 2 share a template: 3 entries. Then full.
		src := ap("192.0.2.10:1000")
		if i >= 1 {
			src = ap("192.0.2.10:1001")
		}
		if i >= 2 {
			src = ap("192.0.2.11:1000")
		}
		pkt := &Packet{Proto: ProtoTCP, Src: src, Dst: ap("192.0.2.100:80"), State: TCPSynRecv}
		_, err := tbl.Schedule(svc, pkt, fixed(d))
		if !errors.Is(err, want) {
			t.Fatalf("Schedule %d: error %v, want %v", i, err, want)
		}
	}
	if diff := cmp.Diff(counters{Active: 2, Persist: 1}, countersOf(d)); diff != "" {
		t.Errorf("dest counters (-want +got):\n%s", diff)
	}
}

func TestFwmarkAddr(t *testing.T) {
	tests := []struct {
		mark uint32
		v6   bool
		want string
	}{
		{7, false, "0.0.0.7"},
		{0x01020304, false, "1.2.3.4"},
		{7, true, "0:7::"},
		{0x01020304, true, "102:304::"},
	}
	for _, tt := range tests {
		if got := FwmarkAddr(tt.mark, tt.v6).String(); got != tt.want {
			t.Errorf("FwmarkAddr(%#x, %v) = %s, want %s", tt.mark, tt.v6, got, tt.want)
		}
	}
	// The template Schedule makes for a fwmark service is found under it.
	tbl, _ := newTestTable(t, nil)
	d := newDest("198.51.100.11", 80, dest.Masq, 1)
	svc := &Service{Fwmark: 0x01020304, Timeout: time.Minute}
	s := mustSchedule(t, tbl, svc, tcpPkt("192.0.2.10:1000", TCPSynRecv), fixed(d))
	k := Key{Proto: ProtoIP, Client: ap("192.0.2.10:0"), Virtual: netip.AddrPortFrom(FwmarkAddr(0x01020304, false), 0), Template: true}
	if r, _, ok := tbl.Lookup(&k); !ok || r != s.Template {
		t.Errorf("Lookup(fwmark template key) = %#x, %v; want %#x", uint64(r), ok, uint64(s.Template))
	}
}
