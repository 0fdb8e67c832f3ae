package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/config/ipvsadm"
)

func init() { addCommand(newConfigCmd) }

// newConfigCmd is the parent of every configuration subcommand; later ones
// (apply, show, history) attach here too.
func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check, convert and replicate lbha configuration",
	}
	cmd.AddCommand(newConfigValidateCmd(), newConfigImportIPVSAdmCmd(), newConfigExportIPVSAdmCmd())
	for _, f := range configCommandFactories {
		cmd.AddCommand(f())
	}
	return cmd
}

// configCommandFactories holds further `lbha config` subcommands that other
// files register from init (apply, show, history talk to the agent).
var configCommandFactories []func() *cobra.Command

// readInput reads a named file, or standard input for "-".
func readInput(cmd *cobra.Command, name string) (data []byte, display string, err error) {
	if name == "-" {
		data, err = io.ReadAll(cmd.InOrStdin())
		return data, "<stdin>", err
	}
	data, err = os.ReadFile(name)
	return data, name, err
}

// printProblems writes one located problem per line and a summary line, for
// a *config.ValidationError; it reports whether err was one. Problems found
// in a model rather than a file are attributed to the input as a whole.
func printProblems(w io.Writer, name string, err error) bool {
	var ve *config.ValidationError
	if !errors.As(err, &ve) {
		return false
	}
	for _, p := range ve.Problems {
		if p.Pos.File == "" {
			p.Pos.File = name
		}
		fmt.Fprintln(w, p)
	}
	noun := "problems"
	if len(ve.Problems) == 1 {
		noun = "problem"
	}
	fmt.Fprintf(w, "%s: %d %s\n", name, len(ve.Problems), noun)
	return true
}

func newConfigValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a configuration file and report every problem in it",
		Long: `Check a configuration file: its YAML syntax, unknown keys, every value,
and the rules between them. Every problem is printed on standard error as
FILE:LINE:COLUMN: setting: reason, followed by a count, and the exit status
is 1. A valid file gets a one-line summary on standard output.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, name, err := readInput(cmd, args[0])
			if err != nil {
				return fmt.Errorf("config validate: %w", err)
			}
			c, err := config.Parse(name, data)
			if err != nil {
				if printProblems(cmd.ErrOrStderr(), name, err) {
					return silentExit(1)
				}
				return fmt.Errorf("config validate: %w", err)
			}
			rss := 0
			for _, s := range c.Services {
				rss += len(s.RealServers)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid %s configuration for %s: %d services, %d real servers, %d VIPs\n",
				name, c.Node.Role, c.Node.Name, len(c.Services), rss, len(c.VIPs))
			return nil
		},
	}
}

func newConfigImportIPVSAdmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "import-ipvsadm [FILE|-]",
		Short: "Convert ipvsadm -Sn rules to an lbha services document",
		Long: `Read rules as ipvsadm -Sn (ipvsadm-save -n) prints them, or as ipvsadm -R
reads them, from FILE or standard input, and print the equivalent YAML
services document. Connection thresholds are not part of ipvsadm's saved
rules, so add them by hand. If the services would not pass lbha's own
checks (which are stricter than ipvsadm's), the document is still printed,
the problems go to standard error and the exit status is 1.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := "-"
			if len(args) == 1 {
				in = args[0]
			}
			data, name, err := readInput(cmd, in)
			if err != nil {
				return fmt.Errorf("config import-ipvsadm: %w", err)
			}
			svcs, err := ipvsadm.ParseSave(data)
			if err != nil {
				var pe *ipvsadm.ParseError
				if errors.As(err, &pe) {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s:%d: %s\n", name, pe.Line, tokenMsg(pe))
					return silentExit(1)
				}
				return fmt.Errorf("config import-ipvsadm: %w", err)
			}
			out, err := config.MarshalServices(svcs)
			if err != nil {
				return fmt.Errorf("config import-ipvsadm: %w", err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "# Services imported from %s by lbha config import-ipvsadm.\n", name)
			if _, err := w.Write(out); err != nil {
				return fmt.Errorf("config import-ipvsadm: %w", err)
			}
			if err := config.ValidateServices(svcs); err != nil {
				ew := cmd.ErrOrStderr()
				fmt.Fprintf(ew, "%s: the imported services do not pass lbha's checks:\n", name)
				if printProblems(ew, name, err) {
					return silentExit(1)
				}
				return fmt.Errorf("config import-ipvsadm: %w", err)
			}
			return nil
		},
	}
}

func tokenMsg(pe *ipvsadm.ParseError) string {
	if pe.Token == "" {
		return pe.Msg
	}
	return fmt.Sprintf("%q: %s", pe.Token, pe.Msg)
}

func newConfigExportIPVSAdmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "export-ipvsadm FILE|-",
		Short: "Print a configuration's services as ipvsadm -Sn would",
		Long: `Print the services of a configuration file (or of a services document
such as import-ipvsadm prints) in the rules format of ipvsadm -Sn, ready for
ipvsadm -R. As with ipvsadm, connection thresholds are not saved, nor are
lbha's own settings (names, health checks, sorry servers).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, name, err := readInput(cmd, args[0])
			if err != nil {
				return fmt.Errorf("config export-ipvsadm: %w", err)
			}
			svcs, err := config.ParseServices(name, data)
			if err != nil {
				if printProblems(cmd.ErrOrStderr(), name, err) {
					return silentExit(1)
				}
				return fmt.Errorf("config export-ipvsadm: %w", err)
			}
			if err := ipvsadm.WriteSave(cmd.OutOrStdout(), svcs); err != nil {
				return fmt.Errorf("config export-ipvsadm: %w", err)
			}
			return nil
		},
	}
}
