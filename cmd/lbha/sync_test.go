package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lbha/lbha/syncd/wire"
)

// The real-kernel captures live with the codec.
const captureDir = "../../syncd/wire/testdata"

func runSync(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), append([]string{"sync"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func captureFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(captureDir, "*.hex"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no captures in %s: %v", captureDir, err)
	}
	return files
}

func fields(line string) map[string]string {
	kv := map[string]string{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			kv[k] = v
		}
	}
	return kv
}

// goldenConns reads the conn[...] lines of a capture's decoded.txt, with
// their options, one slice per datagram.
func goldenConns(t *testing.T, hexFile string) [][]map[string]string {
	t.Helper()
	raw, err := os.ReadFile(strings.TrimSuffix(hexFile, ".hex") + ".decoded.txt")
	if err != nil {
		t.Fatal(err)
	}
	var out [][]map[string]string
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "pkt="):
			out = append(out, nil)
		case strings.HasPrefix(line, "conn["):
			out[len(out)-1] = append(out[len(out)-1], fields(line))
		case strings.HasPrefix(line, "opt "):
			conns := out[len(out)-1]
			kv := fields(line)
			conns[len(conns)-1][strings.Fields(line)[1]] = kv["data"]
		}
	}
	return out
}

// TestSyncDecodeJSON decodes every capture with --json and compares each
// entry with the capture's independent decoding.
func TestSyncDecodeJSON(t *testing.T) {
	entryKeys := []string{"af", "caddr", "cport", "daddr", "dport", "flags", "fwmark", "protocol", "state", "template", "timeout", "vaddr", "vport"}
	for _, file := range captureFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			code, stdout, stderr := runSync(t, "decode", "--json", file)
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			golden := goldenConns(t, file)
			lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
			if len(lines) != len(golden) {
				t.Fatalf("%d JSON lines for %d datagrams", len(lines), len(golden))
			}
			for i, line := range lines {
				var msg map[string]json.RawMessage
				if err := json.Unmarshal([]byte(line), &msg); err != nil {
					t.Fatalf("line %d: %v", i+1, err)
				}
				if diff := cmp.Diff([]string{"count", "entries", "size", "syncid", "version"}, sortedKeys(msg)); diff != "" {
					t.Errorf("message keys (-want +got):\n%s", diff)
				}
				var entries []map[string]any
				if err := json.Unmarshal(msg["entries"], &entries); err != nil {
					t.Fatal(err)
				}
				if len(entries) != len(golden[i]) {
					t.Fatalf("datagram %d: %d entries, golden %d", i+1, len(entries), len(golden[i]))
				}
				for k, e := range entries {
					g := golden[i][k]
					want := slices.Clone(entryKeys)
					if _, ok := g["PE_DATA(2)"]; ok {
						want = append(want, "pe_data", "pe_name")
						slices.Sort(want)
					}
					if diff := cmp.Diff(want, sortedKeys(e)); diff != "" {
						t.Errorf("entry %d keys (-want +got):\n%s", k, diff)
					}
					timeout := strings.TrimSuffix(g["timeout"], "s")
					if timeout == "" {
						timeout = "0" // v0 carries no timeout
					}
					got := map[string]string{
						"proto": num(e["protocol"]), "flags": "0x" + strconv.FormatUint(uint64(e["flags"].(float64)), 16),
						"state": num(e["state"]), "timeout": num(e["timeout"]),
						"c": e["caddr"].(string) + ":" + num(e["cport"]),
						"v": e["vaddr"].(string) + ":" + num(e["vport"]),
						"d": e["daddr"].(string) + ":" + num(e["dport"]),
					}
					wantv := map[string]string{"proto": g["proto"], "flags": g["flags"], "state": g["state"], "timeout": timeout,
						"c": g["c"], "v": g["v"], "d": g["d"]}
					if diff := cmp.Diff(wantv, got); diff != "" {
						t.Errorf("datagram %d entry %d (-golden +json):\n%s", i+1, k, diff)
					}
					if tmpl := e["template"].(bool); tmpl != (atoiHex(t, g["flags"])&0x1000 != 0) {
						t.Errorf("entry %d: template %v for flags %s", k, tmpl, g["flags"])
					}
					if d, ok := g["PE_DATA(2)"]; ok {
						raw, _ := hex.DecodeString(d)
						name, _ := hex.DecodeString(g["PE_NAME(3)"])
						if e["pe_data"] != string(raw) || e["pe_name"] != string(name) {
							t.Errorf("entry %d: pe %v %q, want %q %q", k, e["pe_name"], e["pe_data"], name, raw)
						}
					}
					if e["af"] != "inet" {
						t.Errorf("entry %d: af %v", k, e["af"])
					}
				}
			}
		})
	}
}

func atoiHex(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func num(v any) string { return strconv.FormatFloat(v.(float64), 'f', -1, 64) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func TestSyncDecodeText(t *testing.T) {
	code, stdout, stderr := runSync(t, "decode", filepath.Join(captureDir, "v1-udp-persist.hex"))
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	want := `line 1: v1 syncid=1 size=296 count=8
pro expire state       source             virtual            destination        flags
UDP 02:00  NONE        192.0.5.0:0        192.0.2.100:53     198.51.100.12:53   0x1100(MASQ|INACTIVE|TEMPLATE)
UDP 02:00  NONE        192.0.5.0:0        192.0.2.100:53     198.51.100.12:53   0x1100(MASQ|INACTIVE|TEMPLATE)
UDP 05:00  UDP         192.0.5.10:46701   192.0.2.100:53     198.51.100.12:53   0x100(MASQ|INACTIVE)
UDP 02:00  NONE        192.0.5.0:0        192.0.2.100:53     198.51.100.12:53   0x1100(MASQ|INACTIVE|TEMPLATE)
UDP 02:00  NONE        192.0.5.0:0        192.0.2.100:53     198.51.100.12:53   0x1100(MASQ|INACTIVE|TEMPLATE)
UDP 02:00  NONE        192.0.5.0:0        192.0.2.100:53     198.51.100.12:53   0x1100(MASQ|INACTIVE|TEMPLATE)
UDP 05:00  UDP         192.0.5.10:43913   192.0.2.100:53     198.51.100.12:53   0x100(MASQ|INACTIVE)
UDP 02:00  NONE        192.0.5.0:0        192.0.2.100:53     198.51.100.12:53   0x1100(MASQ|INACTIVE|TEMPLATE)
`
	if diff := cmp.Diff(want, stdout); diff != "" {
		t.Errorf("text output (-want +got):\n%s", diff)
	}

	// A SIP template carries its PE name and Call-ID; two datagrams are
	// separated by a blank line.
	_, stdout, _ = runSync(t, "decode", filepath.Join(captureDir, "sip-pe.hex"))
	sipRow := "UDP 01:00  ASSURED     0.0.0.0:0          192.0.2.100:5060   198.51.100.11:5060 0x1100(MASQ|INACTIVE|TEMPLATE) pe sip f81d4fae-7dec-11d0-a765-00a0c91e6bf6@example.org\n"
	if !strings.Contains(stdout, sipRow) {
		t.Errorf("SIP output lacks %q:\n%s", sipRow, stdout)
	}
	_, stdout, _ = runSync(t, "decode", filepath.Join(captureDir, "v1-maxlen200.hex"))
	if n := strings.Count(stdout, "\n\nline "); n != 4 {
		t.Errorf("%d separated datagrams after the first, want 4:\n%s", n, stdout)
	}
}

// TestSyncFlagNames checks the flag names against the decoded-ext files.
func TestSyncFlagNames(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(captureDir, "*.decoded-ext.txt"))
	if len(files) == 0 {
		t.Fatal("no decoded-ext files")
	}
	seen := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(raw), "\n") {
			flags, ok := fields(line)["flags"]
			if !ok || !strings.Contains(flags, "(") {
				continue
			}
			v, _, _ := strings.Cut(flags, "(")
			if got := flagString(uint32(atoiHex(t, v))); got != flags {
				t.Errorf("flagString(%s) = %q, want %q", v, got, flags)
			}
			seen++
		}
	}
	if seen == 0 {
		t.Fatal("no flags found in the decoded-ext files")
	}
	tests := map[uint32]string{
		0x0:                     "0x0(MASQ)",
		0x10083:                 "0x10083(DROUTE|NOOUTPUT|NFCT)",
		0x2e65:                  "0x2e65(FWD5|SYNC|HASHED|OUT_SEQ|IN_SEQ|NO_CPORT|ONE_PACKET)",
		0x18 | 0x20000 | 0x1001: "0x21019(LOCALNODE|TEMPLATE|0x20018)",
	}
	for in, want := range tests {
		if got := flagString(in); got != want {
			t.Errorf("flagString(%#x) = %q, want %q", in, got, want)
		}
	}
}

// syncDatagram is a v1 datagram with syncid 1 and the given entries.
func syncDatagram(entries ...string) string {
	body := strings.Join(entries, "")
	n := 8 + len(body)/2
	return "0001" + hex.EncodeToString([]byte{byte(n >> 8), byte(n)}) + hex.EncodeToString([]byte{byte(len(entries))}) + "010000" + body
}

func TestSyncDecodeShapes(t *testing.T) {
	// fwmark template: protocol 0, vaddr = mark 7, ASSURED, 600 s.
	fwm := "00000024" + "00001000" + "0001" + "0000" + "0000" + "0000" + "00000007" + "00000258" +
		"c0000300" + "00000007" + "c633640b"
	// IPv6 TCP conn with a SEQ option and NFCT.
	v6 := "0106" + "0062" + "00010600" + "0001" + "9c40" + "01bb" + "01bb" + "00000000" + "00000384" +
		"20010db8000000000000000000000010" + "20010db8000000000000000000000100" + "fd000000000000000000000000000011" +
		"0118" + "000000010000000200000003000000040000000500000006"
	code, stdout, stderr := runSync(t, "decode", "--json", writeInput(t, syncDatagram(fwm, v6)))
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	want := `{"version":1,"syncid":1,"size":142,"count":2,"entries":[` +
		`{"af":"inet","protocol":0,"flags":4096,"state":1,"cport":0,"vport":0,"dport":0,"fwmark":7,"timeout":600,"caddr":"192.0.3.0","vaddr":"0.0.0.7","daddr":"198.51.100.11","template":true},` +
		`{"af":"inet6","protocol":6,"flags":67072,"state":1,"cport":40000,"vport":443,"dport":443,"fwmark":0,"timeout":900,"caddr":"2001:db8::10","vaddr":"2001:db8::100","daddr":"fd00::11","template":false,` +
		`"seq":{"in_init_seq":1,"in_delta":2,"in_previous_delta":3,"out_init_seq":4,"out_delta":5,"out_previous_delta":6}}]}` + "\n"
	if diff := cmp.Diff(want, stdout); diff != "" {
		t.Errorf("JSON (-want +got):\n%s", diff)
	}
	_, stdout, _ = runSync(t, "decode", writeInput(t, syncDatagram(fwm, v6)))
	for _, row := range []string{
		"IP  10:00  ASSURED     192.0.3.0:0        0.0.0.7:0          198.51.100.11:0    0x1000(MASQ|TEMPLATE) fwmark 7\n",
		"TCP 15:00  ESTABLISHED [2001:db8::10]:40000 [2001:db8::100]:443 [fd00::11]:443     0x10600(MASQ|OUT_SEQ|IN_SEQ|NFCT) seq in=1/2/3 out=4/5/6\n",
	} {
		if !strings.Contains(stdout, row) {
			t.Errorf("text output lacks %q:\n%s", row, stdout)
		}
	}
}

func writeInput(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "in.hex")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSyncDecodeErrors(t *testing.T) {
	conn := func(state string) string {
		return "00060024" + "00000000" + state + "9c40" + "0050" + "0050" + "00000000" + "00000384" + "c000020a" + "c0000264" + "c633640b"
	}
	good := syncDatagram(conn("0001"))
	badSize := "0001ffff" + good[8:]
	skipped := syncDatagram(conn("0001"), conn("000b"))
	in := writeInput(t,
		"# comment",
		"",
		"pkt=1 t=x src=y len=44 hex="+good,
		"not hex at all",
		badSize,
		skipped,
		"  "+good+"  ",
	)
	code, stdout, stderr := runSync(t, "decode", "--json", in)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	wantErr := []string{
		"lbha: sync decode: " + in + ":4: bad hex: encoding/hex: invalid byte: U+006E 'n'",
		"lbha: sync decode: " + in + ":5: wire: header size differs from datagram length (65535): datagram dropped",
		"lbha: sync decode: " + in + ":6: wire: entry 1 at offset 44: invalid protocol state (11): entry skipped",
	}
	if diff := cmp.Diff(wantErr, strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	counts := []int{}
	for _, l := range lines {
		var m struct {
			Count   int
			Entries []json.RawMessage
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		counts = append(counts, m.Count, len(m.Entries))
	}
	// The good datagrams and the one with a skipped entry (count 2, one kept).
	if diff := cmp.Diff([]int{1, 1, 2, 1, 1, 1}, counts); diff != "" {
		t.Errorf("decoded datagrams as (count, entries) pairs (-want +got):\n%s", diff)
	}

	t.Run("syncid filter", func(t *testing.T) {
		code, stdout, stderr := runSync(t, "decode", "--syncid", "2", writeInput(t, good))
		if code != 1 || stdout != "" || !strings.Contains(stderr, ":1: wire: syncid does not match (1): datagram dropped") {
			t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		code, _, stderr := runSync(t, "decode", filepath.Join(t.TempDir(), "nope"))
		if code != 1 || !strings.HasPrefix(stderr, "lbha: sync decode: open ") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("too many arguments", func(t *testing.T) {
		if code, _, _ := runSync(t, "decode", "a", "b"); code != 1 {
			t.Errorf("exit %d", code)
		}
	})
}

func TestSyncDecodeStdin(t *testing.T) {
	f, err := os.Open(filepath.Join(captureDir, "v0-tcp-persist.hex"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = old }()
	for _, args := range [][]string{{"decode", "-"}, {"decode"}} {
		if _, err := f.Seek(0, 0); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runSync(t, args...)
		if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "line 1: v0 syncid=1 size=340 count=14\n") {
			t.Errorf("%v: exit %d, stderr %q, stdout %q", args, code, stderr, stdout)
		}
		if n := strings.Count(stdout, "\nTCP 00:00  "); n != 14 {
			t.Errorf("%v: %d TCP rows, want 14", args, n)
		}
	}
}

func TestSyncNames(t *testing.T) {
	tests := []struct {
		proto uint8
		flags uint32
		state uint16
		pro   string
		name  string
	}{
		{6, 0, 1, "TCP", "ESTABLISHED"},
		{6, 0, 10, "TCP", "SYNACK"},
		{6, 0, 11, "TCP", "ERR!"},
		{17, 0, 0, "UDP", "UDP"},
		{17, 0, 1, "UDP", "ERR!"},
		{132, 0, 1, "SCTP", "INIT1"},
		{132, 0, 3, "SCTP", "C-SENT"},
		{132, 0, 11, "SCTP", "S-ACK-SENT"},
		{132, 0, 13, "SCTP", "CLOSED"},
		{132, 0, 14, "SCTP", "ERR!"},
		{0, 0x1000, 0, "IP", "NONE"},
		{6, 0x1000, 1, "TCP", "ASSURED"},
		{17, 0x1000, 2, "UDP", "ERR!"},
		{0, 0, 0, "IP", "NONE"},
		{50, 0, 0, "IP_50", "ERR!"},
		{1, 0, 0, "ICMP", "ERR!"},
		{58, 0, 0, "ICMPv6", "ERR!"},
	}
	for _, tt := range tests {
		e := wire.Entry{Protocol: tt.proto, Flags: tt.flags, State: tt.state}
		if got := protoName(tt.proto); got != tt.pro {
			t.Errorf("protoName(%d) = %q, want %q", tt.proto, got, tt.pro)
		}
		if got := stateName(&e); got != tt.name {
			t.Errorf("stateName(proto %d, flags %#x, state %d) = %q, want %q", tt.proto, tt.flags, tt.state, got, tt.name)
		}
	}
}
