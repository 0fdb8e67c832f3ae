package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/internal/agent"
)

func init() {
	addCommand(func() *cobra.Command { return newDaemonCmd(config.RoleDirector) })
	addCommand(func() *cobra.Command { return newDaemonCmd(config.RoleWitness) })
}

// newDaemonCmd builds `lbha agent` (a director) or `lbha witness`.
func newDaemonCmd(role config.Role) *cobra.Command {
	var file, level string
	var join bool
	use, short := "agent", "Run a director: cluster member, master candidate and dataplane"
	if role == config.RoleWitness {
		use, short = "witness", "Run a witness: a raft voter that never holds a VIP"
	}
	cmd := &cobra.Command{
		Use:   use + " --config FILE",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc, err := os.ReadFile(file)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			cfg, err := config.Parse(file, doc)
			if err != nil {
				if printProblems(cmd.ErrOrStderr(), file, err) {
					return silentExit(2)
				}
				return &exitError{code: 2, err: err}
			}
			if cfg.Node.Role != role {
				return &exitError{code: 2, err: fmt.Errorf("%s: node.role is %s; run `lbha %s` for it", file, cfg.Node.Role, map[config.Role]string{config.RoleDirector: "agent", config.RoleWitness: "witness"}[cfg.Node.Role])}
			}
			var lv slog.Level
			if err := lv.UnmarshalText([]byte(level)); err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--log-level %q: %w", level, err)}
			}
			log := slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lv}))
			err = agent.Run(cmd.Context(), agent.Options{Config: cfg, Doc: doc, Logger: log, Join: join})
			if err != nil && !errors.Is(err, cmd.Context().Err()) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "/etc/lbha/lbha.yaml", "configuration file")
	cmd.Flags().StringVar(&level, "log-level", "info", "log level: debug, info, warn, error")
	cmd.Flags().BoolVar(&join, "join", false, "a new node joining a running cluster: do not bootstrap raft; wait for `lbha join`")
	return cmd
}
