package syncd

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbha/lbha/internal/netlab"
	"github.com/lbha/lbha/persist"
	"github.com/lbha/lbha/syncd/wire"
)

// tsharkFields are the IPVS dissector's fields checked, in output order.
// Wireshark 4.0 cannot skip TLV options or padding (spec §F), so the test
// sends option-less entries only.
var tsharkFields = []string{
	"ipvs.conncount", "ipvs.syncid", "ipvs.size", "ipvs.version",
	"ipvs.proto", "ipvs.cport", "ipvs.vport", "ipvs.dport", "ipvs.timeout", "ipvs.flags.v1", "ipvs.state", "ipvs.size.v1",
	"ipvs.caddr", "ipvs.vaddr", "ipvs.daddr", "ipvs.caddr6", "ipvs.vaddr6", "ipvs.daddr6",
}

// tsharkLine renders a datagram as tshark prints tsharkFields.
func tsharkLine(m *wire.Message) string {
	var proto, cport, vport, dport, timeout, flags, state, size, c4, v4, d4, c6, v6, d6 []string
	for _, e := range m.Entries {
		proto = append(proto, fmt.Sprintf("0x%02x", e.Protocol))
		cport = append(cport, fmt.Sprint(e.CPort))
		vport = append(vport, fmt.Sprint(e.VPort))
		dport = append(dport, fmt.Sprint(e.DPort))
		timeout = append(timeout, fmt.Sprint(e.Timeout))
		flags = append(flags, fmt.Sprintf("0x%08x", e.Flags))
		state = append(state, fmt.Sprintf("0x%04x", e.State))
		if e.IsIPv6() {
			size = append(size, "72")
			c6, v6, d6 = append(c6, e.CAddr.String()), append(v6, e.VAddr.String()), append(d6, e.DAddr.String())
		} else {
			size = append(size, "36")
			c4, v4, d4 = append(c4, e.CAddr.String()), append(v4, e.VAddr.String()), append(d4, e.DAddr.String())
		}
	}
	j := func(s []string) string { return strings.Join(s, ",") }
	return strings.Join([]string{fmt.Sprint(m.Count), fmt.Sprint(m.SyncID), fmt.Sprint(m.Size), fmt.Sprint(m.Version),
		j(proto), j(cport), j(vport), j(dport), j(timeout), j(flags), j(state), j(size),
		j(c4), j(v4), j(d4), j(c6), j(v6), j(d6)}, "|")
}

// TestNetnsTshark captures the master's datagrams in the backup's namespace
// and checks that Wireshark's dissector reads the header and every entry
// as lbha meant them.
func TestNetnsTshark(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark not installed (Debian package tshark): the cross-check against Wireshark's dissector is skipped")
	}
	s := newSyncLab(t)
	// Port 9 carries probes: tshark prints "Capturing on" a while before
	// it really captures, and an empty line of fields shows it does.
	args := []string{"-i", "sync0", "-f", "udp port 8848 or udp port 9", "-l", "-n", "-T", "fields",
		"-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"}
	for _, f := range tsharkFields {
		args = append(args, "-e", f)
	}
	p := s.b.Start("tshark", args...)
	var probe *Sender
	if err := s.x.Do(func() (err error) {
		probe, err = DialSender(TransportConfig{Interface: "sync0", Port: 9})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	empty := strings.Repeat("|", len(tsharkFields)-1)
	if !netlab.WaitFor(20*time.Second, func() bool {
		_ = probe.Send([]byte("probe"))
		time.Sleep(50 * time.Millisecond)
		return strings.Contains(p.Output.String(), empty)
	}) {
		t.Fatalf("tshark did not start capturing:\n%s", p.Output.String())
	}

	master := newTable(t)
	rec := &recorder{}
	m, _ := s.startLabMaster(t, master, MasterConfig{RefreshInterval: -1, SyncID: 7}, func(tx DatagramSender) DatagramSender {
		rec.next = tx
		return rec
	})
	for i := range 40 {
		sc := schedule(t, master, i, i%3 == 0)
		if i%5 == 0 {
			if err := master.SetState(sc.Conn, persist.TCPEstablished); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !netlab.WaitFor(2*time.Second, func() bool { return m.Stats().EntriesSent == 80 }) {
		t.Fatalf("master stats %+v", m.Stats())
	}
	time.Sleep(300 * time.Millisecond) // let tshark print the last packet
	_ = p.Signal(syscall.SIGINT)
	if err := p.Wait(10 * time.Second); err != nil {
		t.Logf("tshark: %v", err)
	}

	var want []string
	for _, d := range rec.datagrams() {
		msg, problems, err := wire.Decode(d)
		if err != nil || problems != nil {
			t.Fatalf("decode: %v %v", problems, err)
		}
		want = append(want, tsharkLine(&msg))
	}
	var got []string
	for _, line := range strings.Split(p.Output.String(), "\n") {
		if strings.Count(line, "|") == len(tsharkFields)-1 && line != empty {
			got = append(got, line)
		}
	}
	if len(want) < 2 {
		t.Fatalf("only %d datagrams sent; the test wants several", len(want))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tshark's decoding differs from what lbha sent (-sent +tshark):\n%s\ntshark output:\n%s", diff, p.Output.String())
	}
	t.Logf("tshark decoded %d datagrams, %d entries, as sent", len(got), m.Stats().EntriesSent)
}
