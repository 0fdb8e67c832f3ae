package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbha/lbha/syncd"
	"github.com/lbha/lbha/syncd/wire"
)

func init() { syncCommandFactories = append(syncCommandFactories, newSyncListenCmd) }

func newSyncListenCmd() *cobra.Command {
	var (
		iface, group string
		port, syncID int
		asJSON       bool
	)
	cmd := &cobra.Command{
		Use:   "listen --interface IF",
		Short: "Print the sync datagrams arriving on an interface",
		Long: `Join the sync multicast group on an interface, as a kernel backup daemon
does, and print every datagram that arrives, checked as a backup with the
given sync id would check it, until interrupted. The output is that of
"lbha sync decode", each datagram headed by its arrival time and sender;
with --json each line is a JSON object with "time" and "from" added.

Datagrams that carry lbha's authentication trailer are decoded without it
and marked; their tag is not verified. Problems a backup would find are
reported on standard error, and listening goes on.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := syncd.TransportConfig{Interface: iface, Port: port}
			if group != "" {
				g, err := netip.ParseAddr(group)
				if err != nil {
					return fmt.Errorf("sync listen: --group: %w", err)
				}
				cfg.Group = g
			}
			rx, err := syncd.ListenReceiver(cfg)
			if err != nil {
				return fmt.Errorf("sync listen: %w", err)
			}
			l := syncListener{
				dec:    wire.Decoder{SyncID: syncID},
				json:   asJSON,
				maxLen: rx.MaxLen(0),
				stdout: cmd.OutOrStdout(),
				stderr: cmd.ErrOrStderr(),
			}
			return l.run(cmd.Context(), rx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&iface, "interface", "", "multicast interface to listen on (required)")
	f.StringVar(&group, "group", "", "multicast group (default 224.0.0.81)")
	f.IntVar(&port, "port", 0, "UDP port (default 8848)")
	f.IntVar(&syncID, "syncid", 0, "check datagrams as a backup with this sync id (0 accepts every sync id)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per datagram")
	_ = cmd.MarkFlagRequired("interface")
	return cmd
}

// datagramReader is what syncListener reads; *syncd.Receiver is one.
type datagramReader interface {
	Read(buf []byte) (int, netip.AddrPort, error)
	Close() error
}

type syncListener struct {
	dec    wire.Decoder
	json   bool
	maxLen int // a kernel backup's buffer on this interface
	stdout io.Writer
	stderr io.Writer
	now    func() time.Time // nil: time.Now
}

// run prints datagrams until ctx is done, which is a normal end.
func (l *syncListener) run(ctx context.Context, rx datagramReader) error {
	defer rx.Close()
	stop := context.AfterFunc(ctx, func() { rx.Close() })
	defer stop()
	// Larger than any UDP payload, so that even what a kernel backup would
	// truncate is shown whole.
	buf := make([]byte, 1<<16)
	for n := 1; ; n++ {
		size, from, err := rx.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("sync listen: %w", err)
		}
		if err := l.show(n, from, buf[:size]); err != nil {
			return fmt.Errorf("sync listen: %w", err)
		}
	}
}

// show prints one datagram and reports its problems.
func (l *syncListener) show(n int, from netip.AddrPort, d []byte) error {
	now := time.Now
	if l.now != nil {
		now = l.now
	}
	at := now()
	report := func(err error) {
		fmt.Fprintf(l.stderr, "lbha: sync listen: datagram %d from %s: %v\n", n, from, err)
	}
	if len(d) > l.maxLen {
		report(fmt.Errorf("%d bytes, longer than a kernel backup's %d-byte buffer: a backup drops it", len(d), l.maxLen))
	}
	msg, trailer := splitTrailer(d)
	m, problems, err := l.dec.Decode(msg)
	if err != nil {
		report(err)
		return nil
	}
	var out bytes.Buffer
	if l.json {
		if err := writeSyncJSON(&out, &m); err != nil {
			return err
		}
		// Splice the arrival fields in front of the decoder's object.
		head, err := json.Marshal(struct {
			Time    string `json:"time"`
			From    string `json:"from"`
			Trailer bool   `json:"auth_trailer,omitempty"`
		}{at.Format(time.RFC3339Nano), from.String(), trailer})
		if err != nil {
			return err
		}
		line := append(append(head[:len(head)-1], ','), out.Bytes()[1:]...)
		if _, err := l.stdout.Write(line); err != nil {
			return err
		}
	} else {
		if err := writeSyncText(&out, n, &m); err != nil {
			return err
		}
		text := out.String()
		// Replace the decoder's "line N: " with the arrival.
		if _, rest, ok := strings.Cut(text, ": "); ok {
			text = rest
		}
		head := fmt.Sprintf("%s %s: ", at.Format("15:04:05.000000"), from)
		if trailer {
			head += "[lbha auth trailer, not verified] "
		}
		if n > 1 {
			head = "\n" + head
		}
		if _, err := io.WriteString(l.stdout, head+text); err != nil {
			return err
		}
	}
	for i := range problems {
		report(&problems[i])
	}
	return nil
}

// splitTrailer returns the kernel message of a datagram that carries
// lbha's authentication trailer: its header's size is then the datagram's
// length less the trailer.
func splitTrailer(d []byte) ([]byte, bool) {
	if len(d) < wire.HeaderLenV0+syncd.TrailerLen {
		return d, false
	}
	if size := int(binary.BigEndian.Uint16(d[2:4])); size == len(d)-syncd.TrailerLen && bytes.HasPrefix(d[size:], []byte("LBHA")) {
		return d[:size], true
	}
	return d, false
}

var _ datagramReader = (*syncd.Receiver)(nil)
