// Command democlient plays the clients of lbha's demo: each source address
// connects to the VIP again and again, reads the greeting of the real server
// that answered (test/realserver), and records it. On SIGINT or SIGTERM, or
// after --duration, it prints one row per client: the real server before
// and after the failover, and the longest time it went without an answer.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

type result struct {
	Client   string   `json:"client"`
	Before   string   `json:"before"`
	After    string   `json:"after"`
	Servers  []string `json:"servers"` // distinct answers in order
	Answers  int      `json:"answers"`
	Failures int      `json:"failures"`
	GapMS    int64    `json:"gap_ms"` // longest time between two answers
}

func main() {
	vip := flag.String("vip", "", "VIP address:port (required)")
	srcs := flag.String("src", "", "comma-separated client source addresses (required)")
	every := flag.Duration("interval", 20*time.Millisecond, "pause between two connections of one client")
	duration := flag.Duration("duration", time.Minute, "stop after this long")
	asJSON := flag.Bool("json", false, "print JSON instead of a table")
	timeout := flag.Duration("timeout", 300*time.Millisecond, "connect timeout; reading the greeting may take as long again")
	flag.Parse()
	if *vip == "" || *srcs == "" {
		fmt.Fprintln(os.Stderr, "democlient: --vip and --src are required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()

	var wg sync.WaitGroup
	clients := strings.Split(*srcs, ",")
	results := make([]result, len(clients))
	for i, src := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = run(ctx, src, *vip, *every, *timeout)
		}()
	}
	wg.Wait()
	if *asJSON {
		_ = json.NewEncoder(os.Stdout).Encode(results)
		return
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tBEFORE\tAFTER\tSAME\tANSWERS\tFAILED\tLONGEST GAP")
	for _, r := range results {
		same := "yes"
		if r.Before != r.After {
			same = "NO"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d ms\n", r.Client, r.Before, r.After, same, r.Answers, r.Failures, r.GapMS)
	}
	tw.Flush()
}

// run is one client's loop.
func run(ctx context.Context, src, vip string, every, timeout time.Duration) result {
	r := result{Client: src}
	last := time.Now()
	d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	for ctx.Err() == nil {
		name, err := ask(ctx, &d, vip, timeout)
		now := time.Now()
		if err != nil {
			r.Failures++
		} else {
			if gap := now.Sub(last).Milliseconds(); gap > r.GapMS {
				r.GapMS = gap
			}
			last = now
			r.Answers++
			if r.Before == "" {
				r.Before = name
			}
			r.After = name
			if len(r.Servers) == 0 || r.Servers[len(r.Servers)-1] != name {
				r.Servers = append(r.Servers, name)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(every):
		}
	}
	return r
}

func ask(ctx context.Context, d *net.Dialer, vip string, timeout time.Duration) (string, error) {
	c, err := d.DialContext(ctx, "tcp", vip)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout + 200*time.Millisecond))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(line), nil
}
