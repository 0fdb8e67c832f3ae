package wire

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// The captures in testdata/ were recorded from a real Linux 6.1 master
// (testdata/README.md). Each NAME.hex holds the datagrams, NAME.decoded.txt
// a field-by-field decoding made independently of this package, and
// NAME.decoded-ext.txt (for some) adds entry offsets, option offsets and
// padding.

// capture is one recorded datagram.
type capture struct {
	file string
	line int
	pkt  int
	data []byte
}

// readHexFile parses a NAME.hex file: `pkt=N ... len=L hex=<payload>`.
func readHexFile(t testing.TB, path string) []capture {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []capture
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if !strings.HasPrefix(line, "pkt=") {
			continue
		}
		kv := keyValues(line)
		data, err := hex.DecodeString(kv["hex"])
		if err != nil {
			t.Fatalf("%s:%d: %v", path, n, err)
		}
		if l := atoi(t, kv["len"]); l != len(data) {
			t.Fatalf("%s:%d: len=%d but %d bytes of hex", path, n, l, len(data))
		}
		out = append(out, capture{file: filepath.Base(path), line: n, pkt: atoi(t, kv["pkt"]), data: data})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// allCaptures returns every datagram of every testdata/*.hex file.
func allCaptures(t testing.TB) []capture {
	t.Helper()
	files, err := filepath.Glob("testdata/*.hex")
	if err != nil || len(files) == 0 {
		t.Fatalf("no captures in testdata: %v", err)
	}
	var all []capture
	for _, f := range files {
		all = append(all, readHexFile(t, f)...)
	}
	return all
}

// goldenDatagram is one datagram as a decoded*.txt file describes it.
type goldenDatagram struct {
	pkt     int
	hex     string
	version uint8
	syncID  uint8
	size    int
	count   int
	entries []goldenEntry
	end     string // the "(end: ...)" note of decoded-ext files
}

type goldenEntry struct {
	index  int
	offset int // -1 when the file does not say
	kv     map[string]string
	flags  string // names in parentheses, decoded-ext only
	tmpl   bool   // "TEMPLATE" word of decoded.txt
	opts   []goldenOpt
	pad    int // -1 when the file does not say
}

type goldenOpt struct {
	offset int // relative to the entry; -1 when the file does not say
	typ    uint8
	data   []byte
}

func keyValues(line string) map[string]string {
	kv := map[string]string{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			kv[k] = v
		}
	}
	return kv
}

func atoi(t testing.TB, s string) int {
	t.Helper()
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		t.Fatalf("bad number %q: %v", s, err)
	}
	return int(n)
}

// readDecoded parses a NAME.decoded.txt or NAME.decoded-ext.txt file.
func readDecoded(t testing.TB, path string) []goldenDatagram {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []goldenDatagram
	cur := func() *goldenDatagram { return &out[len(out)-1] }
	entry := func() *goldenEntry {
		d := cur()
		if len(d.entries) == 0 {
			t.Fatalf("%s: option or padding before any entry", path)
		}
		return &d.entries[len(d.entries)-1]
	}
	for n, line := range strings.Split(string(raw), "\n") {
		trim := strings.TrimSpace(line)
		fields := strings.Fields(trim)
		switch {
		case trim == "" || strings.HasPrefix(trim, "mcastcap:"):
		case strings.HasPrefix(trim, "pkt="):
			kv := keyValues(trim)
			out = append(out, goldenDatagram{pkt: atoi(t, kv["pkt"]), hex: kv["hex"]})
		case strings.HasPrefix(trim, "v1 hdr:"), strings.HasPrefix(trim, "v0 hdr:"):
			kv := keyValues(trim)
			d := cur()
			if fields[0] == "v1" {
				d.version = V1
				if kv["version"] != "1" || kv["spare"] != "0" {
					t.Fatalf("%s:%d: unexpected v1 header %q", path, n+1, trim)
				}
			}
			d.syncID = uint8(atoi(t, kv["syncid"]))
			d.size = atoi(t, kv["size"])
			d.count = atoi(t, kv["nr_conns"])
		case strings.HasPrefix(trim, "conn["):
			name, rest, _ := strings.Cut(trim, ":")
			idx, at, _ := strings.Cut(name, " ")
			e := goldenEntry{offset: -1, pad: -1, kv: keyValues(rest)}
			e.index = atoi(t, strings.TrimSuffix(strings.TrimPrefix(idx, "conn["), "]"))
			if at != "" {
				e.offset = atoi(t, strings.TrimPrefix(at, "@"))
			}
			if f, ok := e.kv["flags"]; ok {
				if v, names, ok := strings.Cut(f, "("); ok {
					e.kv["flags"], e.flags = v, strings.TrimSuffix(names, ")")
				}
			}
			for _, f := range strings.Fields(rest) {
				if f == "TEMPLATE" {
					e.tmpl = true
				}
			}
			cur().entries = append(cur().entries, e)
		case strings.HasPrefix(trim, "opt "):
			o := goldenOpt{offset: -1}
			name := fields[1]
			if strings.HasPrefix(name, "@") {
				o.offset = atoi(t, name[1:])
				name = fields[2]
			}
			_, typ, _ := strings.Cut(strings.TrimSuffix(name, ")"), "(")
			o.typ = uint8(atoi(t, typ))
			kv := keyValues(trim)
			if o.data, err = hex.DecodeString(kv["data"]); err != nil {
				t.Fatalf("%s:%d: %v", path, n+1, err)
			}
			if l := atoi(t, kv["len"]); l != len(o.data) {
				t.Fatalf("%s:%d: len=%d for %d bytes", path, n+1, l, len(o.data))
			}
			entry().opts = append(entry().opts, o)
		case strings.HasPrefix(trim, "pad "):
			entry().pad = atoi(t, fields[1])
		case strings.HasPrefix(trim, "(end:"):
			cur().end = trim
		default:
			t.Fatalf("%s:%d: unparsed line %q", path, n+1, trim)
		}
	}
	return out
}

func parseAddrPort(t testing.TB, s string) (netip.Addr, uint16) {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap.Addr(), ap.Port()
}

// want builds the Message the golden text describes.
func (g *goldenDatagram) want(t testing.TB) Message {
	t.Helper()
	m := Message{Version: g.version, SyncID: g.syncID, Size: uint16(g.size), Count: uint8(g.count)}
	for _, ge := range g.entries {
		kv := ge.kv
		var e Entry
		e.Protocol = uint8(atoi(t, kv["proto"]))
		e.Flags = uint32(atoi(t, kv["flags"]))
		e.State = uint16(atoi(t, kv["state"]))
		e.CAddr, e.CPort = parseAddrPort(t, kv["c"])
		e.VAddr, e.VPort = parseAddrPort(t, kv["v"])
		e.DAddr, e.DPort = parseAddrPort(t, kv["d"])
		if g.version == V1 {
			e.FWMark = uint32(atoi(t, kv["fwmark"]))
			e.Timeout = uint32(atoi(t, strings.TrimSuffix(kv["timeout"], "s")))
		}
		for _, o := range ge.opts {
			switch o.typ {
			case optSeqData:
				s := getSeq(o.data, be)
				e.Seq = &s
			case optPEData:
				e.PEData = o.data
			case optPEName:
				e.PEName = string(o.data)
			default:
				t.Fatalf("pkt %d conn[%d]: unexpected option %d", g.pkt, ge.index, o.typ)
			}
		}
		m.Entries = append(m.Entries, e)
	}
	return m
}

func decodedFiles(t *testing.T) []string {
	files, err := filepath.Glob("testdata/*.decoded*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no decoded files in testdata: %v", err)
	}
	return files
}

// TestGoldenDecode decodes every captured datagram and compares it field by
// field with the decoding recorded next to the capture.
func TestGoldenDecode(t *testing.T) {
	for _, path := range decodedFiles(t) {
		name := strings.TrimSuffix(filepath.Base(path), ".txt")
		caps := readHexFile(t, strings.Split(path, ".decoded")[0]+".hex")
		golden := readDecoded(t, path)
		if len(golden) != len(caps) {
			t.Fatalf("%s: %d datagrams described, %d captured", path, len(golden), len(caps))
		}
		for i, g := range golden {
			t.Run(fmt.Sprintf("%s/pkt%d", name, g.pkt), func(t *testing.T) {
				c := caps[i]
				if g.pkt != c.pkt || g.hex != hex.EncodeToString(c.data) {
					t.Fatalf("decoded file describes another datagram than %s line %d", c.file, c.line)
				}
				if len(g.entries) != g.count {
					t.Fatalf("golden lists %d entries, header says %d", len(g.entries), g.count)
				}
				got, problems, err := Decoder{SyncID: 1}.Decode(c.data)
				if err != nil || len(problems) > 0 {
					t.Fatalf("Decode: problems %v, err %v", problems, err)
				}
				if diff := cmp.Diff(g.want(t), got, cmpOpts...); diff != "" {
					t.Errorf("Decode mismatch (-want +got):\n%s", diff)
				}
				checkLayout(t, &g, &got)
			})
		}
	}
}

// checkLayout compares the sizes, offsets and padding the golden text
// records with those the encoder computes for the same entries.
func checkLayout(t *testing.T, g *goldenDatagram, m *Message) {
	t.Helper()
	off := HeaderLenV0
	if g.version == V1 {
		off = HeaderLenV1
	}
	for i, ge := range g.entries {
		n, err := m.Entries[i].entryLen(g.version)
		if err != nil {
			t.Fatalf("conn[%d]: %v", i, err)
		}
		if s, ok := ge.kv["size"]; ok && atoi(t, s) != n {
			t.Errorf("conn[%d]: golden size %s, encoder length %d", i, s, n)
		}
		if ge.offset >= 0 && ge.offset != off {
			t.Errorf("conn[%d]: golden offset %d, computed %d", i, ge.offset, off)
		}
		optOff := entryLenV4
		for _, o := range ge.opts {
			if o.offset >= 0 && o.offset != optOff {
				t.Errorf("conn[%d]: option %d at %d, computed %d", i, o.typ, o.offset, optOff)
			}
			optOff += 2 + len(o.data)
		}
		if len(ge.opts) > 0 && optOff != n {
			t.Errorf("conn[%d]: options end at %d, entry length %d", i, optOff, n)
		}
		off += n
		last := i == len(g.entries)-1
		if g.version == V1 && !last {
			p := pad(off)
			if ge.pad >= 0 && ge.pad != p {
				t.Errorf("conn[%d]: golden pad %d, computed %d", i, ge.pad, p)
			}
			if ge.pad < 0 && p != 0 && hasExt(g) {
				t.Errorf("conn[%d]: computed pad %d, golden shows none", i, p)
			}
			off += p
		}
		if last && ge.pad > 0 {
			t.Errorf("conn[%d]: golden pads the last entry", i)
		}
	}
	if off != g.size {
		t.Errorf("entries end at %d, header size %d", off, g.size)
	}
}

// hasExt reports whether g comes from a decoded-ext file, which records
// every entry's offset and so every padding.
func hasExt(g *goldenDatagram) bool {
	return len(g.entries) > 0 && g.entries[0].offset >= 0
}

// TestGoldenEncode re-encodes every decoded capture and expects the
// captured bytes back, then rebuilds each capture file with a Builder fed
// the entries in order, as the master filled its buffers.
func TestGoldenEncode(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.hex")
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".hex")
		caps := readHexFile(t, path)
		var msgs []Message
		for _, c := range caps {
			t.Run(fmt.Sprintf("%s/pkt%d", name, c.pkt), func(t *testing.T) {
				var m Message
				if err := m.UnmarshalBinary(c.data); err != nil {
					t.Fatal(err)
				}
				msgs = append(msgs, m)
				got, err := m.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, c.data) {
					t.Errorf("MarshalBinary:\n got %x\nwant %x", got, c.data)
				}
			})
		}
		t.Run(name+"/builder", func(t *testing.T) {
			if len(msgs) != len(caps) {
				t.Skip("decoding failed")
			}
			maxLen := MasterMaxLen(0, false)
			if name == "v1-maxlen200" {
				maxLen = MasterMaxLen(200, false) // ipvsadm --sync-maxlen 200
			}
			b, err := NewBuilder(msgs[0].Version, msgs[0].SyncID, maxLen)
			if err != nil {
				t.Fatal(err)
			}
			var got [][]byte
			for _, m := range msgs {
				for i := range m.Entries {
					ok, err := b.Add(&m.Entries[i])
					if err != nil {
						t.Fatal(err)
					}
					if !ok {
						got = append(got, bytes.Clone(b.Bytes()))
						b.Reset()
						if ok, err := b.Add(&m.Entries[i]); !ok || err != nil {
							t.Fatalf("Add to an empty message = %v, %v", ok, err)
						}
					}
				}
			}
			got = append(got, bytes.Clone(b.Bytes()))
			var want [][]byte
			for _, c := range caps {
				want = append(want, c.data)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Builder datagrams (-want +got):\n%s", diff)
			}
		})
	}
}

// cmpOpts compares netip.Addr by value (its fields are unexported) and
// treats nil and empty slices alike: both mean "none" on the wire.
var cmpOpts = []cmp.Option{cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmpopts.EquateEmpty()}
