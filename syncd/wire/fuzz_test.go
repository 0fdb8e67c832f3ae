package wire

import (
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type fatalfer interface {
	Fatalf(format string, args ...any)
}

// checkDecode decodes b and checks what any datagram must satisfy: the
// problems are ordered and consistent with their actions, and the accepted
// entries re-encode to a datagram that decodes to the same entries without
// problems.
func checkDecode(t fatalfer, b []byte) {
	for _, d := range []Decoder{{}, {SyncID: 1, PENames: []string{}}} {
		m, problems, err := d.Decode(b)
		if err != nil {
			if len(m.Entries) != 0 || problems != nil {
				t.Fatalf("dropped datagram left %d entries, problems %v", len(m.Entries), problems)
			}
			if p, ok := err.(*Problem); !ok || p.Action != DropDatagram {
				t.Fatalf("datagram error %v is not a DropDatagram problem", err)
			}
			continue
		}
		last := -1
		for k, p := range problems {
			if p.Index <= last || p.Index >= int(m.Count) || p.Offset < 0 || p.Offset > len(b)+3 { // padding may point past the end
				t.Fatalf("problem %d out of order or range: %+v", k, p)
			}
			if p.Action == DropRest && k != len(problems)-1 || p.Action == DropDatagram {
				t.Fatalf("problem %d has action %v", k, p.Action)
			}
			_ = p.Error()
			last = p.Index
		}
		if len(m.Entries)+len(problems) > int(m.Count) {
			t.Fatalf("%d entries and %d problems for a count of %d", len(m.Entries), len(problems), m.Count)
		}
		enc, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encoding accepted entries: %v", err)
		}
		m2, problems2, err := d.Decode(enc)
		if err != nil || problems2 != nil {
			t.Fatalf("decoding the re-encoded datagram: %v %v", problems2, err)
		}
		if !entriesEqual(m.Entries, m2.Entries) {
			t.Fatalf("re-encoded entries differ (-first +second):\n%s", cmp.Diff(m.Entries, m2.Entries, cmpOpts...))
		}
	}
}

// entriesEqual is cmp.Equal with cmpOpts for entries, without reflection:
// the fuzzer calls it on every input.
func entriesEqual(a, b []Entry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.Protocol != y.Protocol || x.Flags != y.Flags || x.State != y.State ||
			x.CPort != y.CPort || x.VPort != y.VPort || x.DPort != y.DPort ||
			x.FWMark != y.FWMark || x.Timeout != y.Timeout ||
			x.CAddr != y.CAddr || x.VAddr != y.VAddr || x.DAddr != y.DAddr ||
			(x.Seq == nil) != (y.Seq == nil) || x.Seq != nil && *x.Seq != *y.Seq ||
			string(x.PEData) != string(y.PEData) || x.PEName != y.PEName || x.Expires != y.Expires {
			return false
		}
	}
	return true
}

// TestEntriesEqual keeps entriesEqual in step with Entry.
func TestEntriesEqual(t *testing.T) {
	if n := reflect.TypeFor[Entry]().NumField(); n != 15 {
		t.Fatalf("Entry has %d fields; update entriesEqual", n)
	}
	a := []Entry{withSeq(sipTemplate("x"))}
	b := []Entry{withSeq(sipTemplate("x"))}
	if !entriesEqual(a, b) {
		t.Fatal("equal entries differ")
	}
	b[0].Seq.OutDelta++
	if entriesEqual(a, b) {
		t.Fatal("different SEQ data compare equal")
	}
}

// fuzzSeeds are the captured datagrams plus hand-made ones that reach
// every check.
func fuzzSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, c := range allCaptures(f) {
		seeds = append(seeds, c.data)
	}
	seq := rawOpt(optSeqData, make([]byte, 24))
	seeds = append(seeds,
		rawV1(conn(1000), conn(1001, rawOpt(0x05, []byte{9})), conn(1002, seq)),
		rawV1(rawEntry(udp, FlagTemplate, 0, 0, rawOpt(optPEData, []byte("c")), rawOpt(optPEName, []byte("sip")))),
		rawV1(conn(1000, []byte{0x45, 0})),
		[]byte{1, 1, 0, 28, 0, tcp, 0, 0, 0, 80, 0, 80, 192, 0, 2, 0, 192, 0, 2, 100, 198, 51, 100, 11, 0x11, 0x00, 0, 1},
	)
	return seeds
}

func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
	})
}

// FuzzRoundTrip builds a message from the fuzz input, with the generator
// of the property tests, and checks decode(encode(m)) == m.
func FuzzRoundTrip(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		roundTrip(t, genMessage(&byteDrawer{b: b}))
	})
}

// TestFuzzRegressions keeps the inputs that once failed checkDecode.
func TestFuzzRegressions(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		// A 62-byte SEQ entry padded to 64 puts the next, truncated, entry
		// past the datagram's end: the problem's offset may exceed its length.
		{"next entry offset past the end", with(rawV1(conn(1, rawOpt(optSeqData, make([]byte, 24)))), func(b []byte) { b[4] = 2 })},
		// Every entry skipped: the accepted list is empty, not nil, and
		// re-encodes to a message without entries.
		{"all entries skipped", rawV1(rawEntry(99, 0, 0, 1), rawEntry(tcp, 0, 11, 2))},
		// A v0 message without entries re-encodes to a 4-byte header, which
		// must still decode as v0.
		{"empty v0", []byte{0, 1, 0, 8, 0, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkDecode(t, tt.data) })
	}
}
