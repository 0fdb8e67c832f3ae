package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbha/lbha/cluster"
	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/internal/api"
)

func init() {
	addCommand(newStatusCmd)
	addCommand(newMembersCmd)
	addCommand(newFailoverCmd)
	addCommand(newJoinCmd)
	addCommand(newLeaveCmd)
	configCommandFactories = append(configCommandFactories, newConfigApplyCmd, newConfigShowCmd, newConfigHistoryCmd)
}

// clientFlags are the flags of every command that talks to an agent.
type clientFlags struct {
	socket    string
	json      bool
	url       string // TCP operator API, instead of the socket
	tokenFile string
	caFile    string
}

func (f *clientFlags) register(cmd *cobra.Command) {
	def := os.Getenv("LBHA_SOCKET")
	if def == "" {
		def = config.DefaultSocket
	}
	cmd.Flags().StringVar(&f.socket, "socket", def, "agent API socket (env LBHA_SOCKET)")
	cmd.Flags().BoolVar(&f.json, "json", false, "print JSON instead of a table")
	cmd.Flags().StringVar(&f.url, "api", os.Getenv("LBHA_API"), "TCP operator API, https://host:port, instead of the socket (env LBHA_API)")
	cmd.Flags().StringVar(&f.tokenFile, "token-file", os.Getenv("LBHA_TOKEN_FILE"), "file holding the TCP API's bearer token (env LBHA_TOKEN_FILE)")
	cmd.Flags().StringVar(&f.caFile, "ca-file", os.Getenv("LBHA_CA_FILE"), "CA that signed the agent's certificate, for --api (env LBHA_CA_FILE)")
}

func (f *clientFlags) client() (*api.Client, error) {
	if f.url == "" {
		return api.NewClient(f.socket), nil
	}
	if !strings.HasPrefix(f.url, "https://") {
		return nil, fmt.Errorf("--api %q: the TCP operator API is served over TLS only (https://host:port)", f.url)
	}
	if f.tokenFile == "" {
		return nil, errors.New("--api needs --token-file")
	}
	tok, err := os.ReadFile(f.tokenFile)
	if err != nil {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	var roots *x509.CertPool
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate", f.caFile)
		}
	}
	return api.NewTCPClient(f.url, strings.TrimSpace(string(tok)), roots), nil
}

func (f *clientFlags) do(cmd *cobra.Command, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
	defer cancel()
	c, err := f.client()
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if err := c.Do(ctx, method, path, in, out); err != nil {
		return &exitError{code: 1, err: err}
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newShowCmd builds a read-only command: it GETs path from the agent and
// prints the answer as JSON with --json, else through render (a table).
func newShowCmd[T any](use, short, path string, render func(w io.Writer, v T) error) func() *cobra.Command {
	return newShowCmdFlags(use, short, path, func(*cobra.Command) func(io.Writer, T) error { return render })
}

// newShowCmdFlags is newShowCmd for a command with flags of its own: setup
// registers them on the command (whose client flags, --json included,
// already exist) and returns the renderer, which reads them.
func newShowCmdFlags[T any](use, short, path string, setup func(cmd *cobra.Command) func(w io.Writer, v T) error) func() *cobra.Command {
	return func() *cobra.Command {
		var f clientFlags
		var render func(w io.Writer, v T) error
		cmd := &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				var v T
				if err := f.do(cmd, http.MethodGet, path, nil, &v); err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), v)
				}
				return render(cmd.OutOrStdout(), v)
			},
		}
		f.register(cmd)
		render = setup(cmd)
		return cmd
	}
}

var newStatusCmd = newShowCmd("status", "Show this node's state, term, leader, VIPs and lease", "/v1/status",
	func(w io.Writer, st api.Status) error {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "node\t%s (%s)\n", st.Name, st.Role)
		fmt.Fprintf(tw, "state\t%s\n", st.State)
		fmt.Fprintf(tw, "term\t%d\n", st.Term)
		fmt.Fprintf(tw, "leader\t%s\n", dash(st.Leader))
		fmt.Fprintf(tw, "vips held\t%s\n", dash(strings.Join(st.VIPs, ", ")))
		if st.State == cluster.StateMaster {
			fmt.Fprintf(tw, "lease left\t%v\n", st.LeaseLeft.Round(time.Millisecond))
		} else {
			fmt.Fprintf(tw, "last contact\t%v\n", st.LastContact.Round(time.Millisecond))
		}
		fmt.Fprintf(tw, "config version\t%d\n", st.ConfigVersion)
		if st.Dataplane != "" {
			fmt.Fprintf(tw, "dataplane\t%s\n", st.Dataplane)
		}
		if st.Warning != "" {
			fmt.Fprintf(tw, "WARNING\t%s\n", st.Warning)
		}
		return tw.Flush()
	})

var newMembersCmd = newShowCmd("members", "List the cluster's nodes with role, state, priority, suffrage and health", "/v1/members",
	func(w io.Writer, ms []cluster.Member) error {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tADDRESS\tROLE\tSTATE\tPRIORITY\tSUFFRAGE\tALIVE\tHEALTHY\tWARM\tLEADER")
		for _, m := range ms {
			prio := strconv.Itoa(m.Priority)
			if m.Role == cluster.RoleWitness {
				prio = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, dash(m.Address), dash(string(m.Role)),
				m.State, prio, m.Suffrage, yesNo(m.Alive), yesNo(m.Healthy), yesNo(m.Warm), map[bool]string{true: "*"}[m.Leader])
		}
		return tw.Flush()
	})

func newFailoverCmd() *cobra.Command {
	var f clientFlags
	var req api.FailoverRequest
	cmd := &cobra.Command{
		Use:   "failover [--to NODE] [--force]",
		Short: "Planned switchover: move mastership to another director",
		Long: "Moves mastership by raft leadership transfer, to --to or to the best other director. " +
			"Refused when the target is not alive, healthy and warm (its sync complete), unless --force.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp api.FailoverResponse
			start := time.Now()
			if err := f.do(cmd, http.MethodPost, "/v1/failover", req, &resp); err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), map[string]any{"to": resp.To, "took_ms": time.Since(start).Milliseconds()})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "mastership handed to %s in %v\n", resp.To, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	cmd.Flags().StringVar(&req.To, "to", "", "target director (default: the best other director)")
	cmd.Flags().BoolVar(&req.Force, "force", false, "hand over even if the target is not warm or healthy")
	f.register(cmd)
	return cmd
}

func newConfigApplyCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "apply FILE",
		Short: "Validate a configuration and replicate it to every node through the leader",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			doc, name, err := readInput(cmd, args[0])
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			// Validate locally first for located messages; the agent
			// validates again before replicating.
			if _, err := config.Parse(name, doc); err != nil {
				if printProblems(cmd.ErrOrStderr(), name, err) {
					return silentExit(1)
				}
				return &exitError{code: 1, err: err}
			}
			host, _ := os.Hostname()
			var resp api.ConfigResponse
			if err := f.do(cmd, http.MethodPost, "/v1/config", api.ConfigRequest{Doc: doc, Source: "lbha config apply on " + host}, &resp); err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), resp)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "configuration version %d applied\n", resp.Version)
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

func newConfigShowCmd() *cobra.Command {
	var f clientFlags
	var version uint64
	cmd := &cobra.Command{
		Use:   "show [--version N]",
		Short: "Print the cluster's configuration (the current one, or version N)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rev cluster.Revision
			if err := f.do(cmd, http.MethodGet, "/v1/config?version="+strconv.FormatUint(version, 10), nil, &rev); err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), rev)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "# version %d, %s, from %s\n", rev.Version, rev.Time.Format(time.RFC3339), rev.Source)
			_, err := cmd.OutOrStdout().Write(rev.Doc)
			return err
		},
	}
	cmd.Flags().Uint64Var(&version, "version", 0, "version to show (0: current)")
	f.register(cmd)
	return cmd
}

var newConfigHistoryCmd = newShowCmd("history", "List the versions of the cluster's configuration", "/v1/config/history",
	func(w io.Writer, h []cluster.Revision) error {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tTIME\tSOURCE\tDIGEST")
		for _, r := range h {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%.12s\n", r.Version, r.Time.Format(time.RFC3339), r.Source, r.Digest)
		}
		return tw.Flush()
	})

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func newJoinCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "join ADDRESS",
		Short: "Add this node (started with --join) to the cluster that the member at ADDRESS belongs to",
		Long: "Run on the new node. ADDRESS is any member's address (host, or host:port of its peer API); " +
			"the member forwards the request to the leader, which adds this node as a raft voter.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var m api.MemberRequest
			if err := f.do(cmd, http.MethodPost, "/v1/join-via", api.JoinViaRequest{Peer: args[0]}, &m); err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), m)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (%s) joined the cluster\n", m.Name, m.Address)
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

func newLeaveCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "Remove this node from the cluster cleanly, then stop its agent",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var m api.MemberRequest
			if err := f.do(cmd, http.MethodPost, "/v1/leave-self", nil, &m); err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), m)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s left the cluster; its agent is stopping\n", m.Name)
			return nil
		},
	}
	f.register(cmd)
	return cmd
}
